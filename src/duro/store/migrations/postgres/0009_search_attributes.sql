-- Typed search attributes: set at start, upserted from workflow code, queried by name.
-- A value is text (str_value), a number or bool (num_value), or a time (both: ISO text and
-- epoch seconds, so either comparison works).
CREATE TABLE search_attributes (
    run_id     TEXT NOT NULL,
    namespace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    str_value  TEXT,
    num_value  DOUBLE PRECISION,
    PRIMARY KEY (run_id, name)
);
-- Queries such as CustomerId = 'c-42' and Priority > 3.
CREATE INDEX search_attributes_text ON search_attributes (namespace, name, str_value);
CREATE INDEX search_attributes_number ON search_attributes (namespace, name, num_value);
