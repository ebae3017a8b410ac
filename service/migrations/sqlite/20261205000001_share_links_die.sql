-- Share links die with their file's sharing and with their creator, in the same transaction as the change:
-- making the file private, deleting it, or disabling the user who made the link revokes every live link.
-- A later share makes new links; revoked ones stay dead, whatever happens to the file or user afterwards.
CREATE INDEX idx_share_links_created_by ON share_links (created_by);

CREATE TRIGGER share_links_die_with_file AFTER UPDATE OF visibility, deleted_at ON file_info
WHEN (new.visibility = 'private' AND old.visibility <> 'private')
    OR (new.deleted_at IS NOT NULL AND old.deleted_at IS NULL)
BEGIN
    UPDATE share_links SET revoked_at = new.updated_at WHERE file_id = new.id AND revoked_at IS NULL;
END;

CREATE TRIGGER share_links_die_with_creator AFTER UPDATE OF disabled_at ON users
WHEN new.disabled_at IS NOT NULL AND old.disabled_at IS NULL
BEGIN
    UPDATE share_links SET revoked_at = new.disabled_at WHERE created_by = new.id AND revoked_at IS NULL;
END;

-- Links that outlived such a change before this rule existed.
UPDATE share_links SET revoked_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000000
WHERE revoked_at IS NULL
  AND (file_id IN (SELECT id FROM file_info WHERE visibility = 'private' OR deleted_at IS NOT NULL)
       OR created_by IN (SELECT id FROM users WHERE disabled_at IS NOT NULL));
