-- Demo schema for config/cachesync.toml. Load it with
--   mariadb --protocol=tcp -h127.0.0.1 -P3307 -uroot < config/demo.sql
CREATE DATABASE IF NOT EXISTS shop CHARACTER SET utf8mb4;
CREATE TABLE IF NOT EXISTS shop.users (
  id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  email VARCHAR(255) NOT NULL,
  name VARCHAR(255) NULL,
  balance DECIMAL(18, 4) NOT NULL DEFAULT 0,
  created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  version BIGINT UNSIGNED NOT NULL DEFAULT 1
) ENGINE = InnoDB;
CREATE TABLE IF NOT EXISTS shop.orders (
  id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  user_id BIGINT UNSIGNED NOT NULL,
  status ENUM('new', 'paid', 'shipped', 'cancelled') NOT NULL DEFAULT 'new',
  total DECIMAL(12, 2) NOT NULL,
  placed_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  KEY (user_id)
) ENGINE = InnoDB;
INSERT IGNORE INTO shop.users (id, email, name, balance) VALUES
  (1, 'ada@example.com', 'Ada', 12.5),
  (2, 'linus@example.com', 'Linus', 0);
INSERT IGNORE INTO shop.orders (id, user_id, status, total) VALUES
  (1, 1, 'paid', 99.90);
