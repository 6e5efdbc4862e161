-- Search attribute names known to a namespace: every name a run ever set, plus names
-- registered ahead of use. Queries check names against it, so a typo is an error while a
-- name no run has set yet (or whose runs retention deleted) still queries fine.
CREATE TABLE search_attribute_names (
    namespace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    PRIMARY KEY (namespace, name)
);
INSERT INTO search_attribute_names (namespace, name)
    SELECT DISTINCT namespace, name FROM search_attributes ON CONFLICT DO NOTHING;
