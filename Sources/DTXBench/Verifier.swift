import DTXPostgres
import DTXProtocol
import Foundation
import Logging
import PostgresNIO

/// The invariants of DESIGN section 7, checked across the coordinator's and the participants' databases once the
/// system is quiet (`dtx verify`).
///
/// Rows whose worker_event_id is at or above `Verifier.baselineIDs` were written by the benchmark's `direct` and
/// `local` baselines, which have no coordinator: they count in the stock arithmetic and are exempt from the rest.
public struct Verifier: Sendable {
    public struct Participant: Sendable {
        public var name: String
        public var database: DatabaseURL
        public init(name: String, database: DatabaseURL) {
            self.name = name
            self.database = database
        }
    }

    /// One thing that is wrong, with where it is.
    public struct Violation: Sendable, CustomStringConvertible, Codable {
        public var service: String
        public var workerEventId: Int64?
        public var productId: Int64?
        public var problem: String
        public var description: String {
            var place = [service]
            if let workerEventId { place.append("worker_event \(workerEventId)") }
            if let productId { place.append("product \(productId)") }
            return place.joined(separator: ", ") + ": " + problem
        }
    }

    /// worker_event ids from here up belong to the baselines, which have no worker_events rows.
    public static let baselineIDs: Int64 = 9_000_000_000_000_000

    public var coordinator: DatabaseURL
    public var participants: [Participant]
    public var logger: Logger

    public init(coordinator: DatabaseURL, participants: [Participant], logger: Logger) {
        self.coordinator = coordinator
        self.participants = participants
        self.logger = logger
    }

    /// Every violation found (empty when all invariants hold).
    public func check() async throws -> [Violation] {
        var violations: [Violation] = []
        // 1. every global transaction has one final outcome
        var outcomes: [Int64: (status: String, mode: String, branches: [BranchRecord])] = [:]
        try await coordinator.withConnection(logger: logger) { connection in
            let rows = try await connection.query("SELECT id, status, mode, branches::text FROM worker_events", logger: logger)
            for try await (id, status, mode, branches) in rows.decode((Int64, String, String, String).self) {
                let records = (try? WireJSON.decoder().decode([BranchRecord].self, from: Data(branches.utf8))) ?? []
                outcomes[id] = (status, mode, records)
                if status == "pending" {
                    violations.append(.init(service: "coordinator", workerEventId: id, problem: "worker_event is still pending"))
                } else if status == "failed" && mode == "saga" {
                    violations.append(.init(service: "coordinator", workerEventId: id, problem: "Saga left failed: its compensation did not finish"))
                }
            }
        }
        for participant in participants {
            try await participant.database.withConnection(logger: logger) { connection in
                violations += try await checkParticipant(participant.name, connection: connection, outcomes: outcomes)
            }
        }
        return violations
    }

    private func checkParticipant(
        _ name: String, connection: PostgresConnection, outcomes: [Int64: (status: String, mode: String, branches: [BranchRecord])]
    ) async throws -> [Violation] {
        var violations: [Violation] = []
        // 2. no prepared transaction in doubt
        for try await gid in try await connection.query("SELECT gid FROM pg_prepared_xacts WHERE database = current_database()", logger: logger)
            .decode(String.self)
        {
            violations.append(.init(service: name, problem: "prepared transaction \(gid) is in doubt"))
        }
        // 3. no branch left open; every participant agrees with the global outcome
        var seen: Set<String> = []
        let rows = try await connection.query("SELECT worker_event_id, product_id, status FROM transactions", logger: logger)
        for try await (worker, product, status) in rows.decode((Int64, Int64, String).self) {
            guard worker < Self.baselineIDs else { continue }
            seen.insert("\(worker)/\(product)")
            if status == "try" || status == "confirm_pending" {
                violations.append(.init(service: name, workerEventId: worker, productId: product, problem: "branch left in \(status)"))
            }
            guard let outcome = outcomes[worker] else {
                violations.append(.init(service: name, workerEventId: worker, productId: product, problem: "row for a transaction the coordinator does not know"))
                continue
            }
            if outcome.status == "completed" && status != "confirm" {
                violations.append(.init(service: name, workerEventId: worker, productId: product, problem: "transaction completed but branch is \(status)"))
            }
            if outcome.status != "completed" && outcome.status != "pending" && status == "confirm" {
                violations.append(.init(service: name, workerEventId: worker, productId: product, problem: "transaction \(outcome.status) but branch is confirmed"))
            }
        }
        for (id, outcome) in outcomes where outcome.status == "completed" {
            for branch in outcome.branches where branch.participant == name && !seen.contains("\(id)/\(branch.productId)") {
                violations.append(.init(service: name, workerEventId: id, productId: branch.productId, problem: "transaction completed but this branch has no row"))
            }
        }
        // 4. for every product: initial stock - committed - held = stock
        let stock = try await connection.query(
            """
            SELECT p.id, p.stock, COALESCE(p.initial_stock, p.stock),
                   COALESCE(sum(t.quantity) FILTER (WHERE t.status IN ('confirm', 'try', 'confirm_pending')), 0)::bigint
            FROM products p LEFT JOIN transactions t ON t.product_id = p.id
            GROUP BY p.id, p.stock, p.initial_stock
            HAVING COALESCE(p.initial_stock, p.stock)
                   - COALESCE(sum(t.quantity) FILTER (WHERE t.status IN ('confirm', 'try', 'confirm_pending')), 0) <> p.stock
            """,
            logger: logger
        )
        for try await (product, current, initial, taken) in stock.decode((Int64, Int64, Int64, Int64).self) {
            violations.append(.init(
                service: name, productId: product,
                problem: "stock is \(current) but initial \(initial) - committed and held \(taken) = \(initial - taken)"
            ))
        }
        return violations
    }
}
