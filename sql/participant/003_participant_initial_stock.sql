-- The stock a product started with, so that `dtx verify` can check
--   initial_stock - (quantities of committed rows) - (quantities held by open rows) = stock.
-- Set from stock when a product is inserted; restocking by hand must raise initial_stock by the same amount.
ALTER TABLE products ADD COLUMN IF NOT EXISTS initial_stock bigint;
UPDATE products SET initial_stock = stock WHERE initial_stock IS NULL;

CREATE OR REPLACE FUNCTION products_set_initial_stock() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.initial_stock IS NULL THEN
        NEW.initial_stock := NEW.stock;
    END IF;
    RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS products_initial_stock ON products;
CREATE TRIGGER products_initial_stock BEFORE INSERT ON products
    FOR EACH ROW EXECUTE FUNCTION products_set_initial_stock();
