-- The documented initial data. Ids are fixed so that a second run changes nothing.
INSERT INTO products (id, name, stock) VALUES
    (1, 'ProductA', 100),
    (2, 'ProductB', 200)
ON CONFLICT (id) DO NOTHING;

-- Keep the identity ahead of the fixed ids so that later inserts without an id do not collide.
SELECT setval(pg_get_serial_sequence('products', 'id'), GREATEST((SELECT max(id) FROM products), 1));
