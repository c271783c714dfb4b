import DTXCoordinator
import DTXHTTP
import DTXPostgres
import DTXProtocol
import Foundation
import Testing

/// The database statements each mode costs per global transaction, counted by PostgreSQL itself
/// (pg_stat_statements, top-level statements only), for benchmarks/README.md's cost table.
@Suite("Statements per global transaction", .serialized)
struct StatementCountTests {
    static let transactions = 20

    @Test("canonical protocol (no batching): the counts the cost table gives", arguments: Mode.allCases)
    func canonical(mode: Mode) async throws {
        let counts = try await Self.count(mode, batchWindow: .zero)
        let expected: (participant: Double, coordinator: Double) = switch mode {
        case .tcc: (3, 3)  // try, confirm, finalize; begin, commit point, final
        case .saga: (2, 3)  // reserve, confirm; begin, commit point, final
        case .xa: (4, 3)  // BEGIN, dtx_first_phase, PREPARE TRANSACTION, COMMIT PREPARED; begin, commit point, final
        }
        #expect(counts.serviceA == expected.participant, "\(counts)")
        #expect(counts.serviceB == expected.participant, "\(counts)")
        // plus one durable allocation per block of 100 ids
        #expect(counts.coordinator >= expected.coordinator && counts.coordinator <= expected.coordinator + 0.1, "\(counts)")
        print("statements per \(mode.rawValue) transaction, canonical: ServiceA \(counts.serviceA), ServiceB \(counts.serviceB), coordinator \(counts.coordinator)")
    }

    @Test("batched second phase and group-committed log: never more statements than the canonical protocol", arguments: Mode.allCases)
    func batched(mode: Mode) async throws {
        let counts = try await Self.count(mode, batchWindow: .milliseconds(1), concurrency: 8)  // the default window
        let canonical: (participant: Double, coordinator: Double) = switch mode {
        case .tcc: (2, 3.1)  // try, then confirm and finalize in one statement (dtx_confirm_finalize)
        case .saga: (2, 3.1)
        case .xa: (4, 3.1)
        }
        #expect(counts.serviceA <= canonical.participant && counts.serviceB <= canonical.participant, "\(counts)")
        #expect(counts.coordinator <= canonical.coordinator, "\(counts)")
        print("statements per \(mode.rawValue) transaction, batched at 8 clients: ServiceA \(counts.serviceA), ServiceB \(counts.serviceB), coordinator \(counts.coordinator)")
    }

    /// Runs `transactions` completed transactions of `mode` (`concurrency` at a time) and returns the top-level
    /// statements per transaction in each database.
    static func count(_ mode: Mode, batchWindow: Duration, concurrency: Int = 1) async throws -> (serviceA: Double, serviceB: Double, coordinator: Double) {
        let cluster = try await PrivateCluster.start("statements-\(mode.rawValue)-\(batchWindow.inMilliseconds)", databases: ["service_a", "service_b", "coordinator"]) {
            $0.statementStatistics = true
        }
        var result: (Double, Double, Double) = (0, 0, 0)
        try await withCleanup {
            let databases = (a: try cluster.url("service_a"), b: try cluster.url("service_b"), coordinator: try cluster.url("coordinator"))
            try await CoordinatorFixture.with(databases: databases, configure: {
                $0.batchWindow = batchWindow
                $0.timing.recoveryInterval = .seconds(60)  // no claims while counting
            }) { f in
                _ = try await withDatabase(databases.a) { connection in
                    try await connection.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", logger: TestPostgres.logger)
                }
                // warm up: connections open, statements prepared, the first block of ids taken
                #expect(try await f.post(TransactionRequest(mode: mode, productId: 1, quantity: 1)).status == 200)
                _ = try await scalar(databases.a, "SELECT count(*) FROM (SELECT pg_stat_statements_reset()) r")
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for worker in 0..<concurrency {
                        group.addTask {
                            for _ in stride(from: worker, to: transactions, by: concurrency) {
                                let status = try await f.post(TransactionRequest(mode: mode, productId: 1, quantity: 1)).status
                                #expect(status == 200)
                            }
                        }
                    }
                    try await group.waitForAll()
                }
                func calls(_ database: String) async throws -> Double {
                    Double(try await scalar(databases.a, """
                        SELECT coalesce(sum(s.calls), 0)::bigint FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
                        WHERE d.datname = \(database) AND s.toplevel AND s.query NOT LIKE '%pg_stat_statements%'
                        """)) / Double(transactions)
                }
                result = (try await calls("service_a"), try await calls("service_b"), try await calls("coordinator"))
            }
        } cleanup: {
            cluster.destroy()
        }
        return result
    }
}
