//! A schema shaped like MySQL's Sakila sample — utf8 tables, `TIMESTAMP ... ON UPDATE`,
//! `YEAR`, `ENUM`, `SET`, `BLOB`, `DECIMAL`, a MyISAM table filled by triggers, a
//! `GEOMETRY` column with a spatial index, foreign keys `ON UPDATE CASCADE` and one
//! `ON DELETE SET NULL`, circular foreign keys (store ↔ staff) — synced whole by the
//! binlog strategy: `doctor` accepts it (GEOMETRY included) and lists the cascades; after
//! changes of every kind (a country's id changed under its cities, as in issue 19, a
//! rental deleted under its payments, points written, films inserted through the
//! triggers) Redis equals MySQL table by table, and `cachesync verify` says `in sync`.
//!
//! ```text
//! scripts/services.sh up
//! cargo test --test sakila
//! ```

mod common;

use std::time::Duration;

use cachesync::cmd::run::Daemon;
use cachesync::config::Config;
use cachesync::model::table::SyncedTable;
use common::TestDb;
use common::converge::wait_tables_converged;

/// `(table, key placeholders)` of every Sakila table.
const TABLES: &[(&str, &str)] = &[
    ("actor", "{actor_id}"),
    ("country", "{country_id}"),
    ("city", "{city_id}"),
    ("address", "{address_id}"),
    ("language", "{language_id}"),
    ("category", "{category_id}"),
    ("film", "{film_id}"),
    ("film_actor", "{actor_id}:{film_id}"),
    ("film_category", "{film_id}:{category_id}"),
    ("film_text", "{film_id}"),
    ("store", "{store_id}"),
    ("staff", "{staff_id}"),
    ("customer", "{customer_id}"),
    ("inventory", "{inventory_id}"),
    ("rental", "{rental_id}"),
    ("payment", "{payment_id}"),
];

const TS: &str =
    "last_update TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP";

fn schema() -> Vec<String> {
    let utf8 = "ENGINE=InnoDB DEFAULT CHARSET=utf8";
    vec![
        format!("CREATE TABLE actor (actor_id SMALLINT UNSIGNED NOT NULL AUTO_INCREMENT, first_name VARCHAR(45) NOT NULL, last_name VARCHAR(45) NOT NULL, {TS}, PRIMARY KEY (actor_id), KEY idx_actor_last_name (last_name)) {utf8}"),
        format!("CREATE TABLE country (country_id SMALLINT UNSIGNED NOT NULL AUTO_INCREMENT, country VARCHAR(50) NOT NULL, {TS}, PRIMARY KEY (country_id)) {utf8}"),
        format!("CREATE TABLE city (city_id SMALLINT UNSIGNED NOT NULL AUTO_INCREMENT, city VARCHAR(50) NOT NULL, country_id SMALLINT UNSIGNED NOT NULL, {TS}, PRIMARY KEY (city_id), KEY idx_fk_country_id (country_id), CONSTRAINT fk_city_country FOREIGN KEY (country_id) REFERENCES country (country_id) ON DELETE RESTRICT ON UPDATE CASCADE) {utf8}"),
        format!("CREATE TABLE address (address_id SMALLINT UNSIGNED NOT NULL AUTO_INCREMENT, address VARCHAR(50) NOT NULL, address2 VARCHAR(50) DEFAULT NULL, district VARCHAR(20) NOT NULL, city_id SMALLINT UNSIGNED NOT NULL, postal_code VARCHAR(10) DEFAULT NULL, phone VARCHAR(20) NOT NULL, location GEOMETRY NOT NULL, {TS}, PRIMARY KEY (address_id), KEY idx_fk_city_id (city_id), SPATIAL KEY idx_location (location), CONSTRAINT fk_address_city FOREIGN KEY (city_id) REFERENCES city (city_id) ON DELETE RESTRICT ON UPDATE CASCADE) {utf8}"),
        format!("CREATE TABLE language (language_id TINYINT UNSIGNED NOT NULL AUTO_INCREMENT, name CHAR(20) NOT NULL, {TS}, PRIMARY KEY (language_id)) {utf8}"),
        format!("CREATE TABLE category (category_id TINYINT UNSIGNED NOT NULL AUTO_INCREMENT, name VARCHAR(25) NOT NULL, {TS}, PRIMARY KEY (category_id)) {utf8}"),
        format!("CREATE TABLE film (film_id SMALLINT UNSIGNED NOT NULL AUTO_INCREMENT, title VARCHAR(128) NOT NULL, description TEXT DEFAULT NULL, release_year YEAR DEFAULT NULL, language_id TINYINT UNSIGNED NOT NULL, original_language_id TINYINT UNSIGNED DEFAULT NULL, rental_duration TINYINT UNSIGNED NOT NULL DEFAULT 3, rental_rate DECIMAL(4,2) NOT NULL DEFAULT 4.99, length SMALLINT UNSIGNED DEFAULT NULL, replacement_cost DECIMAL(5,2) NOT NULL DEFAULT 19.99, rating ENUM('G','PG','PG-13','R','NC-17') DEFAULT 'G', special_features SET('Trailers','Commentaries','Deleted Scenes','Behind the Scenes') DEFAULT NULL, {TS}, PRIMARY KEY (film_id), KEY idx_title (title), KEY idx_fk_language_id (language_id), KEY idx_fk_original_language_id (original_language_id), CONSTRAINT fk_film_language FOREIGN KEY (language_id) REFERENCES language (language_id) ON DELETE RESTRICT ON UPDATE CASCADE, CONSTRAINT fk_film_language_original FOREIGN KEY (original_language_id) REFERENCES language (language_id) ON DELETE RESTRICT ON UPDATE CASCADE) {utf8}"),
        format!("CREATE TABLE film_actor (actor_id SMALLINT UNSIGNED NOT NULL, film_id SMALLINT UNSIGNED NOT NULL, {TS}, PRIMARY KEY (actor_id, film_id), KEY idx_fk_film_id (film_id), CONSTRAINT fk_film_actor_actor FOREIGN KEY (actor_id) REFERENCES actor (actor_id) ON DELETE RESTRICT ON UPDATE CASCADE, CONSTRAINT fk_film_actor_film FOREIGN KEY (film_id) REFERENCES film (film_id) ON DELETE RESTRICT ON UPDATE CASCADE) {utf8}"),
        format!("CREATE TABLE film_category (film_id SMALLINT UNSIGNED NOT NULL, category_id TINYINT UNSIGNED NOT NULL, {TS}, PRIMARY KEY (film_id, category_id), CONSTRAINT fk_film_category_film FOREIGN KEY (film_id) REFERENCES film (film_id) ON DELETE RESTRICT ON UPDATE CASCADE, CONSTRAINT fk_film_category_category FOREIGN KEY (category_id) REFERENCES category (category_id) ON DELETE RESTRICT ON UPDATE CASCADE) {utf8}"),
        "CREATE TABLE film_text (film_id SMALLINT NOT NULL, title VARCHAR(255) NOT NULL, description TEXT, PRIMARY KEY (film_id), FULLTEXT KEY idx_title_description (title, description)) ENGINE=MyISAM DEFAULT CHARSET=utf8".to_owned(),
        "CREATE TRIGGER ins_film AFTER INSERT ON film FOR EACH ROW BEGIN INSERT INTO film_text (film_id, title, description) VALUES (new.film_id, new.title, new.description); END".to_owned(),
        "CREATE TRIGGER upd_film AFTER UPDATE ON film FOR EACH ROW BEGIN IF (old.title != new.title) OR (old.description != new.description) OR (old.film_id != new.film_id) THEN UPDATE film_text SET title = new.title, description = new.description, film_id = new.film_id WHERE film_id = old.film_id; END IF; END".to_owned(),
        "CREATE TRIGGER del_film AFTER DELETE ON film FOR EACH ROW BEGIN DELETE FROM film_text WHERE film_id = old.film_id; END".to_owned(),
        format!("CREATE TABLE store (store_id TINYINT UNSIGNED NOT NULL AUTO_INCREMENT, manager_staff_id TINYINT UNSIGNED NOT NULL, address_id SMALLINT UNSIGNED NOT NULL, {TS}, PRIMARY KEY (store_id), UNIQUE KEY idx_unique_manager (manager_staff_id), KEY idx_fk_address_id (address_id), CONSTRAINT fk_store_address FOREIGN KEY (address_id) REFERENCES address (address_id) ON DELETE RESTRICT ON UPDATE CASCADE) {utf8}"),
        format!("CREATE TABLE staff (staff_id TINYINT UNSIGNED NOT NULL AUTO_INCREMENT, first_name VARCHAR(45) NOT NULL, last_name VARCHAR(45) NOT NULL, address_id SMALLINT UNSIGNED NOT NULL, picture BLOB DEFAULT NULL, email VARCHAR(50) DEFAULT NULL, store_id TINYINT UNSIGNED NOT NULL, active BOOLEAN NOT NULL DEFAULT TRUE, username VARCHAR(16) NOT NULL, password VARCHAR(40) BINARY DEFAULT NULL, {TS}, PRIMARY KEY (staff_id), KEY idx_fk_store_id (store_id), KEY idx_fk_address_id (address_id), CONSTRAINT fk_staff_store FOREIGN KEY (store_id) REFERENCES store (store_id) ON DELETE RESTRICT ON UPDATE CASCADE, CONSTRAINT fk_staff_address FOREIGN KEY (address_id) REFERENCES address (address_id) ON DELETE RESTRICT ON UPDATE CASCADE) {utf8}"),
        "ALTER TABLE store ADD CONSTRAINT fk_store_staff FOREIGN KEY (manager_staff_id) REFERENCES staff (staff_id) ON DELETE RESTRICT ON UPDATE CASCADE".to_owned(),
        format!("CREATE TABLE customer (customer_id SMALLINT UNSIGNED NOT NULL AUTO_INCREMENT, store_id TINYINT UNSIGNED NOT NULL, first_name VARCHAR(45) NOT NULL, last_name VARCHAR(45) NOT NULL, email VARCHAR(50) DEFAULT NULL, address_id SMALLINT UNSIGNED NOT NULL, active BOOLEAN NOT NULL DEFAULT TRUE, create_date DATETIME NOT NULL, last_update TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP, PRIMARY KEY (customer_id), KEY idx_fk_store_id (store_id), KEY idx_fk_address_id (address_id), KEY idx_last_name (last_name), CONSTRAINT fk_customer_address FOREIGN KEY (address_id) REFERENCES address (address_id) ON DELETE RESTRICT ON UPDATE CASCADE, CONSTRAINT fk_customer_store FOREIGN KEY (store_id) REFERENCES store (store_id) ON DELETE RESTRICT ON UPDATE CASCADE) {utf8}"),
        format!("CREATE TABLE inventory (inventory_id MEDIUMINT UNSIGNED NOT NULL AUTO_INCREMENT, film_id SMALLINT UNSIGNED NOT NULL, store_id TINYINT UNSIGNED NOT NULL, {TS}, PRIMARY KEY (inventory_id), KEY idx_fk_film_id (film_id), KEY idx_store_id_film_id (store_id, film_id), CONSTRAINT fk_inventory_store FOREIGN KEY (store_id) REFERENCES store (store_id) ON DELETE RESTRICT ON UPDATE CASCADE, CONSTRAINT fk_inventory_film FOREIGN KEY (film_id) REFERENCES film (film_id) ON DELETE RESTRICT ON UPDATE CASCADE) {utf8}"),
        format!("CREATE TABLE rental (rental_id INT NOT NULL AUTO_INCREMENT, rental_date DATETIME NOT NULL, inventory_id MEDIUMINT UNSIGNED NOT NULL, customer_id SMALLINT UNSIGNED NOT NULL, return_date DATETIME DEFAULT NULL, staff_id TINYINT UNSIGNED NOT NULL, {TS}, PRIMARY KEY (rental_id), UNIQUE KEY (rental_date, inventory_id, customer_id), KEY idx_fk_inventory_id (inventory_id), KEY idx_fk_customer_id (customer_id), KEY idx_fk_staff_id (staff_id), CONSTRAINT fk_rental_staff FOREIGN KEY (staff_id) REFERENCES staff (staff_id) ON DELETE RESTRICT ON UPDATE CASCADE, CONSTRAINT fk_rental_inventory FOREIGN KEY (inventory_id) REFERENCES inventory (inventory_id) ON DELETE RESTRICT ON UPDATE CASCADE, CONSTRAINT fk_rental_customer FOREIGN KEY (customer_id) REFERENCES customer (customer_id) ON DELETE RESTRICT ON UPDATE CASCADE) {utf8}"),
        format!("CREATE TABLE payment (payment_id SMALLINT UNSIGNED NOT NULL AUTO_INCREMENT, customer_id SMALLINT UNSIGNED NOT NULL, staff_id TINYINT UNSIGNED NOT NULL, rental_id INT DEFAULT NULL, amount DECIMAL(5,2) NOT NULL, payment_date DATETIME NOT NULL, {TS}, PRIMARY KEY (payment_id), KEY idx_fk_staff_id (staff_id), KEY idx_fk_customer_id (customer_id), CONSTRAINT fk_payment_rental FOREIGN KEY (rental_id) REFERENCES rental (rental_id) ON DELETE SET NULL ON UPDATE CASCADE, CONSTRAINT fk_payment_customer FOREIGN KEY (customer_id) REFERENCES customer (customer_id) ON DELETE RESTRICT ON UPDATE CASCADE, CONSTRAINT fk_payment_staff FOREIGN KEY (staff_id) REFERENCES staff (staff_id) ON DELETE RESTRICT ON UPDATE CASCADE) {utf8}"),
    ]
}

/// A few rows in every table, loaded before cachesync starts (its snapshot reads them).
const DATA: &[&str] = &[
    "SET FOREIGN_KEY_CHECKS = 0",
    "INSERT INTO actor (actor_id, first_name, last_name) VALUES (1, 'PENELOPE', 'GUINESS'), (2, 'NICK', 'WAHLBERG'), (3, 'ED', 'CHASE')",
    "INSERT INTO country (country_id, country) VALUES (1, 'Afghanistan'), (2, 'Algeria'), (3, 'Côte d’Ivoire')",
    "INSERT INTO city (city_id, city, country_id) VALUES (1, 'Kabul', 1), (2, 'Herat', 1), (3, 'Batna', 2), (4, 'Abidjan', 3)",
    "INSERT INTO address (address_id, address, district, city_id, postal_code, phone, location) VALUES \
     (1, '47 MySakila Drive', 'Alberta', 1, NULL, '', ST_GeomFromText('POINT(-112.8185647 49.6999986)')), \
     (2, '28 MySQL Boulevard', 'QLD', 3, NULL, '', ST_GeomFromText('POINT(153.1408538 -27.6333361)')), \
     (3, '23 Workhaven Lane', 'Alberta', 2, '', '14033335568', ST_GeomFromText('POINT(-112.8185673 49.6999951)', 4326))",
    "INSERT INTO language (language_id, name) VALUES (1, 'English'), (2, 'Italian')",
    "INSERT INTO category (category_id, name) VALUES (1, 'Action'), (2, 'Animation')",
    "INSERT INTO film (film_id, title, description, release_year, language_id, rental_duration, rental_rate, length, replacement_cost, rating, special_features) VALUES \
     (1, 'ACADEMY DINOSAUR', 'A Epic Drama of a Feminist And a Mad Scientist', 2006, 1, 6, 0.99, 86, 20.99, 'PG', 'Deleted Scenes,Behind the Scenes'), \
     (2, 'ACE GOLDFINGER', 'A Astounding Epistle of a Database Administrator', 2006, 1, 3, 4.99, 48, 12.99, 'G', 'Trailers,Deleted Scenes')",
    "INSERT INTO film_actor (actor_id, film_id) VALUES (1, 1), (2, 1), (3, 2)",
    "INSERT INTO film_category (film_id, category_id) VALUES (1, 2), (2, 1)",
    "INSERT INTO store (store_id, manager_staff_id, address_id) VALUES (1, 1, 1), (2, 2, 2)",
    "INSERT INTO staff (staff_id, first_name, last_name, address_id, picture, email, store_id, username, password) VALUES \
     (1, 'Mike', 'Hillyer', 3, x'89504e470d0a1a0a', 'Mike.Hillyer@sakilastaff.com', 1, 'Mike', '8cb2237d0679ca88db6464eac60da96345513964'), \
     (2, 'Jon', 'Stephens', 3, NULL, 'Jon.Stephens@sakilastaff.com', 2, 'Jon', NULL)",
    "INSERT INTO customer (customer_id, store_id, first_name, last_name, email, address_id, create_date) VALUES \
     (1, 1, 'MARY', 'SMITH', 'MARY.SMITH@sakilacustomer.org', 1, '2006-02-14 22:04:36'), \
     (2, 2, 'PATRICIA', 'JOHNSON', NULL, 2, '2006-02-14 22:04:36')",
    "INSERT INTO inventory (inventory_id, film_id, store_id) VALUES (1, 1, 1), (2, 1, 2), (3, 2, 2)",
    "INSERT INTO rental (rental_id, rental_date, inventory_id, customer_id, return_date, staff_id) VALUES \
     (1, '2005-05-24 22:53:30', 1, 1, '2005-05-26 22:04:30', 1), (2, '2005-05-24 22:54:33', 2, 2, NULL, 2)",
    "INSERT INTO payment (payment_id, customer_id, staff_id, rental_id, amount, payment_date) VALUES \
     (1, 1, 1, 1, 2.99, '2005-05-25 11:30:37'), (2, 1, 1, 1, 0.99, '2005-05-28 10:35:23'), (3, 2, 2, 2, 5.99, '2005-06-15 00:54:12')",
    "SET FOREIGN_KEY_CHECKS = 1",
];

/// Changes of every kind, made while cachesync runs.
const CHANGES: &[&str] = &[
    // Issue 19's case: a country's id changes; MySQL cascades it to its cities, unlogged.
    "UPDATE country SET country_id = 10 WHERE country_id = 1",
    // A city's id changes: its addresses follow.
    "UPDATE city SET city_id = 30 WHERE city_id = 3",
    // Points written and moved, with and without an SRID.
    "INSERT INTO address (address_id, address, district, city_id, phone, location) VALUES \
     (4, '1913 Hanoi Way', 'Nagasaki', 4, '28303384290', ST_GeomFromText('POINT(-4.0083 5.3600)', 4326))",
    "UPDATE address SET location = ST_GeomFromText('POINT(-112.81 49.7)') WHERE address_id = 1",
    // Through the triggers into the MyISAM table.
    "INSERT INTO film (film_id, title, description, release_year, language_id, rating, special_features) VALUES \
     (3, 'ADAPTATION HOLES', 'A Astounding Reflection of a Lumberjack', 2006, 2, 'NC-17', 'Trailers')",
    "UPDATE film SET title = 'ACADEMY DINOSAUR II', special_features = 'Commentaries' WHERE film_id = 1",
    // A rental deleted: its payments' rental_id becomes NULL (ON DELETE SET NULL).
    "DELETE FROM rental WHERE rental_id = 1",
    "UPDATE staff SET picture = x'ffd8ffe000104a464946', active = FALSE WHERE staff_id = 2",
    "INSERT INTO payment (payment_id, customer_id, staff_id, rental_id, amount, payment_date) VALUES \
     (4, 2, 2, 2, 9.99, '2005-06-16 12:00:00')",
    // A language id change cascades to films (and through them nowhere else).
    "UPDATE language SET language_id = 20 WHERE language_id = 2",
];

fn config_toml(db: &TestDb, prefix: &str) -> String {
    let tables: String = TABLES
        .iter()
        .map(|(table, key)| {
            format!(
                "[[tables]]\nname = \"{}.{table}\"\nkey = \"{prefix}:{table}:{key}\"\n",
                db.name
            )
        })
        .collect();
    format!(
        "strategy = \"binlog\"\n\
         [mysql]\nurl = \"{}\"\n\
         [redis]\nurl = \"{}\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n\
         [binlog]\nserver_id = {}\ncheckpoint_key = \"{prefix}:checkpoint\"\n\
         {tables}",
        common::mysql_url(),
        common::redis_url(),
        500_000 + std::process::id() % 100_000,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sakila_shaped_schema_syncs_every_table_and_verify_says_in_sync() {
    let mut db = TestDb::create("sakila").await;
    for sql in schema() {
        db.exec(&sql).await;
    }
    for sql in DATA {
        db.exec(sql).await;
    }
    let prefix = common::unique("sakila");
    let dir = tempfile::tempdir().unwrap();
    let path = common::write_config(dir.path(), &config_toml(&db, &prefix));

    // doctor accepts every table, GEOMETRY included, and lists the cascades.
    let doctor = common::cachesync_command(&["doctor", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(doctor.status.success(), "doctor:\n{report}");
    assert!(!report.contains("FAIL"), "{report}");
    assert!(
        report.contains(&format!(
            "{}.city(country_id) → {}.country(country_id) ON UPDATE CASCADE",
            db.name, db.name
        )),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "{}.payment(rental_id) → {}.rental(rental_id) ON UPDATE CASCADE ON DELETE SET NULL",
            db.name, db.name
        )),
        "{report}"
    );

    let config = Config::load(&path).unwrap();
    let daemon = Daemon::start(&config).await.unwrap();
    // Changes made once the snapshot is in come off the binlog.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !redis::AsyncCommands::exists::<_, bool>(
        &mut common::redis_conn().await,
        format!("{prefix}:checkpoint"),
    )
    .await
    .unwrap()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for sql in CHANGES {
        db.exec(sql).await;
    }
    let tables: Vec<&SyncedTable> = daemon.services().tables.iter().map(|t| &**t).collect();
    assert_eq!(tables.len(), TABLES.len());
    wait_tables_converged(&mut db, &tables, "sakila").await;
    let cities = common::converge::cached_table(tables[2]).await;
    assert!(
        cities[&format!("{prefix}:city:1")].contains(r#""country_id":10"#),
        "{cities:?}"
    );
    let addresses = common::converge::cached_table(tables[3]).await;
    assert!(
        addresses[&format!("{prefix}:address:4")]
            .contains(r#""location":"SRID=4326;POINT(-4.0083 5.36)""#),
        "{addresses:?}"
    );

    let verify = common::cachesync_command(&["verify", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && said.trim_end().ends_with("in sync"),
        "verify:\n{said}\n{}",
        String::from_utf8_lossy(&verify.stderr)
    );

    tokio::time::timeout(Duration::from_secs(30), daemon.stop())
        .await
        .unwrap()
        .unwrap();
    common::clear_redis_prefix(&prefix).await;
    db.drop_db().await;
}
