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
        var coordinatorPrunedThrough: Int64 = 0
        try await coordinator.withConnection(logger: logger) { connection in
            for try await pruned in try await connection.query("SELECT pruned_through FROM worker_event_ids", logger: logger).decode(Int64.self) {
                coordinatorPrunedThrough = pruned
            }
            let rows = try await connection.query("SELECT id, status, mode, branches::text, open FROM worker_events", logger: logger)
            for try await (id, status, mode, branches, open) in rows.decode((Int64, String, String, String, Bool).self) {
                let records = (try? WireJSON.decoder().decode([BranchRecord].self, from: Data(branches.utf8))) ?? []
                outcomes[id] = (status, mode, records)
                if status == "pending" {
                    violations.append(.init(service: "coordinator", workerEventId: id, problem: "worker_event is still pending"))
                } else if status == "failed" && mode == "saga" {
                    let problem = open ? "Saga left failed: its compensation did not finish" : "Saga failed and not driven (its phase is not compensate): needs an operator"
                    violations.append(.init(service: "coordinator", workerEventId: id, problem: problem))
                }
            }
        }
        // a participant the log names but that was not given (left out, or its name misspelt) cannot be checked: its
        // rows could be missing and nothing else here would say so
        let given = Set(participants.map(\.name))
        var unchecked: [String: Int64] = [:]
        for (id, outcome) in outcomes {
            for branch in outcome.branches where !given.contains(branch.participant) { unchecked[branch.participant] = min(unchecked[branch.participant] ?? id, id) }
        }
        for (name, id) in unchecked.sorted(by: { $0.key < $1.key }) {
            violations.append(.init(service: name, workerEventId: id, problem: "the log names participant '\(name)' (first in this worker_event), which was not checked: give its database too"))
        }
        for participant in participants {
            try await participant.database.withConnection(logger: logger) { connection in
                violations += try await checkParticipant(
                    participant.name, connection: connection, outcomes: outcomes, coordinatorPrunedThrough: coordinatorPrunedThrough
                )
            }
        }
        return violations
    }

    /// Retention (sql/*/005, 003) prunes what is final: a row the other side no longer has is not a violation when it
    /// is at or below that side's pruned watermark, and pruned committed quantities count in `committed_pruned` (005) and
    /// `pruned_quantities` (sql/participant/008).
    private func checkParticipant(
        _ name: String, connection: PostgresConnection, outcomes: [Int64: (status: String, mode: String, branches: [BranchRecord])],
        coordinatorPrunedThrough: Int64
    ) async throws -> [Violation] {
        var violations: [Violation] = []
        var prunedHere: Int64 = 0
        for try await watermark in try await connection.query("SELECT pruned_gid_watermark FROM retention_state", logger: logger).decode(Int64.self) {
            prunedHere = watermark
        }
        // 2. nothing left open: no prepared transaction in doubt, no branch in try or confirm_pending (the view
        // open_branches is the one definition, sql/participant/004)
        let open = try await connection.query("SELECT worker_event_id, product_id, status, gid FROM open_branches", logger: logger)
        for try await (worker, product, status, gid) in open.decode((Int64?, Int64?, String, String?).self) {
            if let gid {
                violations.append(.init(service: name, problem: "prepared transaction \(gid) is in doubt"))
            } else if let worker, worker < Self.baselineIDs {
                violations.append(.init(service: name, workerEventId: worker, productId: product, problem: "branch left in \(status)"))
            }
        }
        // 3. every participant agrees with the global outcome
        var seen: Set<String> = []
        let rows = try await connection.query("SELECT worker_event_id, product_id, status FROM transactions", logger: logger)
        for try await (worker, product, status) in rows.decode((Int64, Int64, String).self) {
            guard worker < Self.baselineIDs else { continue }
            seen.insert("\(worker)/\(product)")
            guard let outcome = outcomes[worker] else {
                // a cancelled branch of a transaction the coordinator never logged is a presumed abort: its first
                // record was lost in a crash of the coordinator's database, and the branch was undone; one the
                // coordinator pruned is fine either way
                if status == "confirm" && worker > coordinatorPrunedThrough {
                    violations.append(.init(service: name, workerEventId: worker, productId: product, problem: "committed row for a transaction the coordinator does not know"))
                }
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
            for branch in outcome.branches where branch.participant == name && !seen.contains("\(id)/\(branch.productId)") && id > prunedHere {
                violations.append(.init(service: name, workerEventId: id, productId: branch.productId, problem: "transaction completed but this branch has no row"))
            }
        }
        // 4. for every product: initial stock - committed - held = stock
        let stock = try await connection.query(
            """
            WITH pruned AS (SELECT q.product_id, sum(q.quantity) AS quantity FROM pruned_quantities q GROUP BY q.product_id)
            SELECT p.id, p.stock, COALESCE(p.initial_stock, p.stock),
                   (p.committed_pruned + COALESCE(max(r.quantity), 0)
                    + COALESCE(sum(t.quantity) FILTER (WHERE t.status IN ('confirm', 'try', 'confirm_pending')), 0))::bigint
            FROM products p LEFT JOIN pruned r ON r.product_id = p.id LEFT JOIN transactions t ON t.product_id = p.id
            GROUP BY p.id, p.stock, p.initial_stock, p.committed_pruned
            HAVING COALESCE(p.initial_stock, p.stock) - p.committed_pruned - COALESCE(max(r.quantity), 0)
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
