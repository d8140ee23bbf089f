-- Product search (`GET /products/search/:query`: name or description contains the query,
-- case-insensitive) through trigram indexes instead of a sequential ILIKE scan per request: at 100,000
-- products a rare word took ~130 ms of one core per request by seq scan, ~1 ms with these indexes
-- (e2e/bench/data, tests/scale.rs). Queries shorter than 3 characters cannot use trigrams and still
-- scan, in id order, stopping at the page size.
-- pg_trgm ships with PostgreSQL (contrib) and is a trusted extension: the database owner may create it
-- without superuser rights. Building the indexes takes ~1 s per 100,000 products and blocks writes to
-- products meanwhile.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX products_name_trgm_idx ON products USING gin (name gin_trgm_ops);
CREATE INDEX products_description_trgm_idx ON products USING gin (description gin_trgm_ops);
