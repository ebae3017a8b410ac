-- Initial schema of the embedded (SQLite) backend.
-- Ids are UUIDs stored as 16-byte blobs; times are microseconds since the Unix epoch (INTEGER),
-- so that ordering and range filters compare numbers, not text.

CREATE TABLE users (
    id          BLOB PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    quota_bytes INTEGER CHECK (quota_bytes IS NULL OR quota_bytes >= 0),
    created_at  INTEGER NOT NULL,
    disabled_at INTEGER
);

CREATE TABLE api_keys (
    id           BLOB PRIMARY KEY NOT NULL,
    user_id      BLOB NOT NULL REFERENCES users (id),
    key_hash     TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);
CREATE INDEX idx_api_keys_user_id ON api_keys (user_id);

-- One row per distinct content; a blob leaves the store only when ref_count reaches 0.
CREATE TABLE blobs (
    content_hash TEXT PRIMARY KEY NOT NULL,
    size         INTEGER NOT NULL CHECK (size >= 0),
    ref_count    INTEGER NOT NULL CHECK (ref_count >= 0),
    created_at   INTEGER NOT NULL
);

CREATE TABLE file_info (
    id           BLOB PRIMARY KEY NOT NULL,
    user_id      BLOB NOT NULL REFERENCES users (id),
    name         TEXT NOT NULL,
    mime_type    TEXT NOT NULL,
    file_size    INTEGER NOT NULL CHECK (file_size >= 0),
    content_hash TEXT NOT NULL REFERENCES blobs (content_hash),
    visibility   TEXT NOT NULL DEFAULT 'private' CHECK (visibility IN ('private', 'public', 'shared')),
    upload_time  INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    deleted_at   INTEGER,
    width        INTEGER,
    height       INTEGER,
    thumb_state  TEXT
);
-- The seed's indexes, by name.
CREATE INDEX idx_file_info_user_id ON file_info (user_id);
CREATE INDEX idx_file_info_upload_time ON file_info (upload_time);
CREATE INDEX idx_file_info_file_type ON file_info (mime_type);
CREATE INDEX idx_file_info_file_size ON file_info (file_size);
CREATE INDEX idx_file_info_user_upload ON file_info (user_id, upload_time);
CREATE INDEX idx_file_info_type_size ON file_info (mime_type, file_size);
-- What the listing's other sort orders and the blob release need.
CREATE INDEX idx_file_info_user_name ON file_info (user_id, name, id);
CREATE INDEX idx_file_info_user_size ON file_info (user_id, file_size, id);
CREATE INDEX idx_file_info_content_hash ON file_info (content_hash);

CREATE TABLE file_tags (
    file_id BLOB NOT NULL REFERENCES file_info (id) ON DELETE CASCADE,
    tag     TEXT NOT NULL,
    PRIMARY KEY (file_id, tag)
);
CREATE INDEX idx_file_tags_tag ON file_tags (tag, file_id);

CREATE TABLE audit_logs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp  INTEGER NOT NULL,
    user_id    BLOB,
    action     TEXT NOT NULL,
    file_id    BLOB,
    ip_address TEXT,
    user_agent TEXT,
    status     INTEGER NOT NULL,
    -- Bytes received (uploads) or sent (downloads), for statistics.
    bytes      INTEGER,
    detail     TEXT
);
CREATE INDEX idx_audit_logs_timestamp ON audit_logs (timestamp);
CREATE INDEX idx_audit_logs_user_action ON audit_logs (user_id, action);
CREATE INDEX idx_audit_logs_ip_address ON audit_logs (ip_address);
CREATE INDEX idx_audit_logs_action_timestamp ON audit_logs (action, timestamp);

-- A signed link to one file, readable without a key until it expires, runs out or is revoked.
CREATE TABLE share_links (
    id            BLOB PRIMARY KEY NOT NULL,
    file_id       BLOB NOT NULL REFERENCES file_info (id) ON DELETE CASCADE,
    created_by    BLOB NOT NULL REFERENCES users (id),
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    max_downloads INTEGER,
    downloads     INTEGER NOT NULL DEFAULT 0,
    revoked_at    INTEGER
);
CREATE INDEX idx_share_links_file_id ON share_links (file_id);

-- Case-insensitive substring search on names: an FTS5 trigram index kept in step with file_info by triggers.
CREATE VIRTUAL TABLE file_info_name_fts USING fts5 (name, content = 'file_info', content_rowid = 'rowid', tokenize = 'trigram');
CREATE TRIGGER file_info_name_fts_insert AFTER INSERT ON file_info BEGIN
    INSERT INTO file_info_name_fts (rowid, name) VALUES (new.rowid, new.name);
END;
CREATE TRIGGER file_info_name_fts_delete AFTER DELETE ON file_info BEGIN
    INSERT INTO file_info_name_fts (file_info_name_fts, rowid, name) VALUES ('delete', old.rowid, old.name);
END;
CREATE TRIGGER file_info_name_fts_update AFTER UPDATE OF name ON file_info BEGIN
    INSERT INTO file_info_name_fts (file_info_name_fts, rowid, name) VALUES ('delete', old.rowid, old.name);
    INSERT INTO file_info_name_fts (rowid, name) VALUES (new.rowid, new.name);
END;
