-- The trigram indexes of product search (20261202180000) without GIN's pending list. With
-- `fastupdate` on (the default) new entries go to an unsorted pending list that every search reads in
-- full until VACUUM (or autovacuum's analyze) merges it, and a manual ANALYZE does not. After the
-- 100,000-product bulk load of e2e/bench/data/generate.sql the lists held 466 pages: a rare-word search
-- took 86 ms (EXPLAIN ANALYZE), and 0.7 ms once they were merged. In a live store the list grows up to
-- gin_pending_list_limit (4 MB) between merges. Products are written rarely and searched often, so
-- each insert or update now updates the indexes directly, and what is pending is merged here.
ALTER INDEX products_name_trgm_idx SET (fastupdate = off);
ALTER INDEX products_description_trgm_idx SET (fastupdate = off);
SELECT gin_clean_pending_list('products_name_trgm_idx'::regclass);
SELECT gin_clean_pending_list('products_description_trgm_idx'::regclass);
