-- Table locations are stored in the one spelling `storage::Location` writes: `file:///p`, not the
-- `file:/p` form earlier versions stored, so the purge guard's comparison matches rows of both ages.
UPDATE iceberg_table
   SET location = 'file://' || substr(location, 6)
 WHERE location LIKE 'file:/%' AND location NOT LIKE 'file://%';
