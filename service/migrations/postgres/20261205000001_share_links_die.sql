-- Share links die with their file's sharing and with their creator, in the same transaction as the change:
-- making the file private, deleting it, or disabling the user who made the link revokes every live link.
-- A later share makes new links; revoked ones stay dead, whatever happens to the file or user afterwards.
CREATE INDEX idx_share_links_created_by ON share_links (created_by);

CREATE FUNCTION share_links_die_with_file() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE share_links SET revoked_at = NEW.updated_at WHERE file_id = NEW.id AND revoked_at IS NULL;
    RETURN NULL;
END;
$$;
CREATE TRIGGER share_links_die_with_file AFTER UPDATE OF visibility, deleted_at ON file_info
FOR EACH ROW
WHEN ((NEW.visibility = 'private' AND OLD.visibility <> 'private')
    OR (NEW.deleted_at IS NOT NULL AND OLD.deleted_at IS NULL))
EXECUTE FUNCTION share_links_die_with_file();

CREATE FUNCTION share_links_die_with_creator() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE share_links SET revoked_at = NEW.disabled_at WHERE created_by = NEW.id AND revoked_at IS NULL;
    RETURN NULL;
END;
$$;
CREATE TRIGGER share_links_die_with_creator AFTER UPDATE OF disabled_at ON users
FOR EACH ROW
WHEN (NEW.disabled_at IS NOT NULL AND OLD.disabled_at IS NULL)
EXECUTE FUNCTION share_links_die_with_creator();

-- Links that outlived such a change before this rule existed.
UPDATE share_links SET revoked_at = now()
WHERE revoked_at IS NULL
  AND (file_id IN (SELECT id FROM file_info WHERE visibility = 'private' OR deleted_at IS NOT NULL)
       OR created_by IN (SELECT id FROM users WHERE disabled_at IS NOT NULL));
