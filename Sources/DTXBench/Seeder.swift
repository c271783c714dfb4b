import DTXPostgres
import Logging
import PostgresNIO

/// Puts the workload's products, with their stock, into the participants' databases (`initial_stock` too).
public enum Seeder {
    public static func seed(_ workload: Workload, serviceA: DatabaseURL, serviceB: DatabaseURL, logger: Logger) async throws {
        let first = Workload.firstProduct
        let last = first + Int64(workload.products) - 1
        let exhaustedFirst = workload.firstExhausted
        let exhaustedLast = exhaustedFirst + Int64(workload.exhaustedProducts) - 1
        for (url, isA) in [(serviceA, true), (serviceB, false)] {
            try await url.withConnection(logger: logger) { connection in
                try await upsert(connection, from: first, to: last, stock: workload.stock, logger: logger)
                if workload.exhaustedProducts > 0 {
                    try await upsert(connection, from: exhaustedFirst, to: exhaustedLast, stock: isA ? workload.stock : 0, logger: logger)
                }
                if isA {
                    // ids for the rows of pgbench's reference rows, above Verifier.baselineIDs (see Pgbench)
                    try await connection.query("CREATE SEQUENCE IF NOT EXISTS dtx_bench_ids START 9000000000000001", logger: logger)
                    // the local baseline's stand-in for ServiceB's products, in ServiceA's database
                    try await upsert(connection, from: first + Workload.mirrorOffset, to: last + Workload.mirrorOffset, stock: workload.stock, logger: logger)
                    if workload.exhaustedProducts > 0 {
                        try await upsert(connection, from: exhaustedFirst + Workload.mirrorOffset, to: exhaustedLast + Workload.mirrorOffset, stock: 0, logger: logger)
                    }
                }
                try await connection.query("ANALYZE products", logger: logger)
            }
        }
    }

    static func upsert(_ connection: PostgresConnection, from: Int64, to: Int64, stock: Int64, logger: Logger) async throws {
        guard to >= from else { return }
        // stock and initial_stock move together, so the invariant check stays right across reseeds
        try await connection.query(
            """
            INSERT INTO products (id, name, stock, initial_stock)
            SELECT g, 'P' || g, \(stock), \(stock) FROM generate_series(\(from)::bigint, \(to)::bigint) AS g
            ON CONFLICT (id) DO UPDATE SET initial_stock = products.initial_stock + (\(stock) - products.stock), stock = \(stock)
            """,
            logger: logger
        )
    }
}
