-- Initial schema of the PostgreSQL backend; the same tables, columns and index names as the SQLite one.
-- Text that is sorted or range-scanned uses the "C" collation so ordering is bytewise, as in SQLite,
-- and keyset cursors mean the same thing on both backends.

CREATE TABLE users (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    quota_bytes BIGINT CHECK (quota_bytes IS NULL OR quota_bytes >= 0),
    created_at  TIMESTAMPTZ NOT NULL,
    disabled_at TIMESTAMPTZ
);

CREATE TABLE api_keys (
    id           UUID PRIMARY KEY,
    user_id      UUID NOT NULL REFERENCES users (id),
    key_hash     TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX idx_api_keys_user_id ON api_keys (user_id);

-- One row per distinct content; a blob leaves the store only when ref_count reaches 0.
CREATE TABLE blobs (
    content_hash TEXT PRIMARY KEY,
    size         BIGINT NOT NULL CHECK (size >= 0),
    ref_count    BIGINT NOT NULL CHECK (ref_count >= 0),
    created_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE file_info (
    id           UUID PRIMARY KEY,
    user_id      UUID NOT NULL REFERENCES users (id),
    name         TEXT COLLATE "C" NOT NULL,
    mime_type    TEXT COLLATE "C" NOT NULL,
    file_size    BIGINT NOT NULL CHECK (file_size >= 0),
    content_hash TEXT NOT NULL REFERENCES blobs (content_hash),
    visibility   TEXT NOT NULL DEFAULT 'private' CHECK (visibility IN ('private', 'public', 'shared')),
    upload_time  TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    deleted_at   TIMESTAMPTZ,
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
    file_id UUID NOT NULL REFERENCES file_info (id) ON DELETE CASCADE,
    tag     TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (file_id, tag)
);
CREATE INDEX idx_file_tags_tag ON file_tags (tag, file_id);

CREATE TABLE audit_logs (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    timestamp  TIMESTAMPTZ NOT NULL,
    user_id    UUID,
    action     TEXT NOT NULL,
    file_id    UUID,
    ip_address TEXT,
    user_agent TEXT,
    status     INTEGER NOT NULL,
    -- Bytes received (uploads) or sent (downloads), for statistics.
    bytes      BIGINT,
    detail     TEXT
);
CREATE INDEX idx_audit_logs_timestamp ON audit_logs (timestamp);
CREATE INDEX idx_audit_logs_user_action ON audit_logs (user_id, action);
CREATE INDEX idx_audit_logs_ip_address ON audit_logs (ip_address);
CREATE INDEX idx_audit_logs_action_timestamp ON audit_logs (action, timestamp);

-- A signed link to one file, readable without a key until it expires, runs out or is revoked.
CREATE TABLE share_links (
    id            UUID PRIMARY KEY,
    file_id       UUID NOT NULL REFERENCES file_info (id) ON DELETE CASCADE,
    created_by    UUID NOT NULL REFERENCES users (id),
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,
    max_downloads BIGINT,
    downloads     BIGINT NOT NULL DEFAULT 0,
    revoked_at    TIMESTAMPTZ
);
CREATE INDEX idx_share_links_file_id ON share_links (file_id);

-- Case-insensitive substring search on names: trigram GIN index over lower(name), used by LIKE '%q%'.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX idx_file_info_name_trgm ON file_info USING gin (lower(name) gin_trgm_ops);
