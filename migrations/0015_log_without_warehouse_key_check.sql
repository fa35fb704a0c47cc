-- The update log without a foreign key to `warehouse`. The key check of every append locked the
-- warehouse's one row FOR KEY SHARE until COMMIT, so concurrent commits anywhere in a warehouse
-- all locked the same tuple: each locker after the first made a new MultiXact of every current
-- locker and rewrote the tuple's xmax (a dirtied page and a WAL record per commit), one point
-- that every commit of the warehouse passed through. Nothing is lost with the check: floe
-- registers its configured warehouses and never deletes a warehouse row, every entry's
-- warehouse_id comes from floe's own registered warehouse (never from a request), and the
-- tables and namespaces an entry names keep their own keys to `warehouse`.
ALTER TABLE commit_log DROP CONSTRAINT commit_log_warehouse_id_fkey;
