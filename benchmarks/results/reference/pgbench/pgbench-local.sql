\set p 1000 + random_zipfian(0, 99, 1.1)
SELECT nextval('dtx_bench_ids') AS id \gset
BEGIN;
UPDATE products SET stock = stock - 1 WHERE id = :p;
INSERT INTO transactions (service, product_id, quantity, status, worker_event_id, mode) VALUES ('ServiceA', :p, 1, 'confirm', :id, 'saga');
UPDATE products SET stock = stock - 1 WHERE id = :p + 10000000;
INSERT INTO transactions (service, product_id, quantity, status, worker_event_id, mode) VALUES ('ServiceB', :p + 10000000, 1, 'confirm', :id, 'saga');
END;
