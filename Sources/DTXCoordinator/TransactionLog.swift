import DTXPostgres
import DTXProtocol
import Foundation
import Logging
import PostgresNIO

/// The coordinator's durable log: the `worker_events` table.
///
/// Every write that moves a transaction is fenced by the lease: `WHERE lease_owner = <this coordinator>`. A
/// coordinator whose lease was taken over finds its write refused (`LeaseLost`) and stops driving.
public struct TransactionLog: Sendable {
    let client: PostgresClient
    let owner: String
    let leaseSeconds: Double
    let logger: Logger

    /// This coordinator no longer holds the transaction: another one took it over.
    public struct LeaseLost: Error, CustomStringConvertible {
        public var id: Int64
        public var description: String { "worker_event \(id): lease lost to another coordinator" }
    }

    static let columns = "id, status, mode, phase, error_message, branches::text, deadline_at, attempts, created_at"

    /// Logs a new global transaction, `pending` in its mode's first phase, leased to this coordinator.
    func begin(mode: Mode, request: TransactionRequest, branches: [BranchRecord], globalTimeout: Duration) async throws -> GlobalTransaction {
        let requestJSON = String(decoding: try WireJSON.encoder().encode(request), as: UTF8.self)
        let branchesJSON = String(decoding: try WireJSON.encoder().encode(branches), as: UTF8.self)
        let timeout = globalTimeout.inSeconds
        let rows = try await client.query(
            """
            INSERT INTO worker_events (status, mode, phase, request, branches, deadline_at, lease_owner, lease_expires_at)
            VALUES ('pending', \(mode.rawValue), \(Phase.first(for: mode).rawValue), \(requestJSON)::jsonb, \(branchesJSON)::jsonb,
                    now() + make_interval(secs => \(timeout)), \(owner), now() + make_interval(secs => \(leaseSeconds)))
            RETURNING \(unescaped: Self.columns)
            """,
            logger: logger
        )
        guard let transaction = try await Self.decode(rows).first else { throw CoordinatorError.logWriteFailed("no row returned") }
        return transaction
    }

    /// Writes the transaction's status, phase, error and branches, and renews the lease.
    ///
    /// The write that makes a transaction final does not wait for its WAL flush (`synchronous_commit = off`): if a
    /// crash loses it, the transaction is found in its second phase again and driven to the same end (every
    /// participant call is idempotent). The writes before it (the start, the decision) are durable.
    func record(_ transaction: GlobalTransaction) async throws {
        let branchesJSON = String(decoding: try WireJSON.encoder().encode(transaction.branches), as: UTF8.self)
        let keepLease = !transaction.isFinal
        let update: PostgresQuery = """
            UPDATE worker_events
            SET status = \(transaction.status.rawValue), phase = \(transaction.phase.rawValue),
                error_message = \(transaction.errorMessage), branches = \(branchesJSON)::jsonb, updated_at = now(),
                lease_owner = CASE WHEN \(keepLease) THEN lease_owner END,
                lease_expires_at = CASE WHEN \(keepLease) THEN now() + make_interval(secs => \(leaseSeconds)) END
            WHERE id = \(transaction.id) AND lease_owner = \(owner)
            RETURNING 1
            """
        let updated: Int
        if transaction.isFinal {
            updated = try await client.transaction(logger: logger) { connection in
                try await connection.query("SELECT set_config('synchronous_commit', 'off', true)", logger: logger)
                return try await connection.query(update, logger: logger).count()
            }
        } else {
            updated = try await client.query(update, logger: logger).count()
        }
        guard updated == 1 else { throw LeaseLost(id: transaction.id) }
    }

    /// Gives the transaction back to the recovery loop, to be tried again after `delay`.
    func postpone(_ transaction: GlobalTransaction, delay: Duration) async throws {
        let branchesJSON = String(decoding: try WireJSON.encoder().encode(transaction.branches), as: UTF8.self)
        try await client.query(
            """
            UPDATE worker_events
            SET branches = \(branchesJSON)::jsonb, attempts = attempts + 1, updated_at = now(),
                next_retry_at = now() + make_interval(secs => \(delay.inSeconds)), lease_owner = NULL, lease_expires_at = NULL
            WHERE id = \(transaction.id) AND lease_owner = \(owner)
            """,
            logger: logger
        )
    }

    /// Claims up to `limit` transactions that are not final, are due, and that nobody holds (or whose holder's lease
    /// ended). `FOR UPDATE SKIP LOCKED` keeps two coordinators from claiming the same row.
    func claim(limit: Int) async throws -> [GlobalTransaction] {
        let rows = try await client.query(
            """
            UPDATE worker_events SET lease_owner = \(owner), lease_expires_at = now() + make_interval(secs => \(leaseSeconds))
            WHERE id IN (
                SELECT id FROM worker_events
                WHERE (status = 'pending' OR (status = 'failed' AND mode = 'saga'))
                  AND next_retry_at <= now()
                  AND (lease_owner IS NULL OR lease_expires_at < now())
                ORDER BY next_retry_at
                LIMIT \(limit)
                FOR UPDATE SKIP LOCKED
            )
            RETURNING \(unescaped: Self.columns)
            """,
            logger: logger
        )
        return try await Self.decode(rows)
    }

    public func view(id: Int64) async throws -> TransactionView? {
        let rows = try await client.query(
            "SELECT \(unescaped: Self.viewColumns) FROM worker_events WHERE id = \(id)",
            logger: logger
        )
        return try await Self.decodeViews(rows).first
    }

    public func list(status: GlobalStatus?, limit: Int) async throws -> [TransactionView] {
        let rows: PostgresRowSequence
        if let status {
            rows = try await client.query(
                "SELECT \(unescaped: Self.viewColumns) FROM worker_events WHERE status = \(status.rawValue) ORDER BY id DESC LIMIT \(limit)",
                logger: logger
            )
        } else {
            rows = try await client.query(
                "SELECT \(unescaped: Self.viewColumns) FROM worker_events ORDER BY id DESC LIMIT \(limit)",
                logger: logger
            )
        }
        return try await Self.decodeViews(rows)
    }

    // MARK: Decoding

    static func decode(_ rows: PostgresRowSequence) async throws -> [GlobalTransaction] {
        var result: [GlobalTransaction] = []
        for try await (id, status, mode, phase, error, branches, deadline, attempts, created) in rows.decode(
            (Int64, String, String, String, String?, String, Date, Int32, Date).self
        ) {
            guard let status = GlobalStatus(rawValue: status), let mode = Mode(rawValue: mode), let phase = Phase(rawValue: phase) else {
                throw CoordinatorError.logWriteFailed("worker_event \(id) has an unknown status, mode or phase")
            }
            result.append(
                GlobalTransaction(
                    id: id, mode: mode, status: status, phase: phase, errorMessage: error,
                    branches: try WireJSON.decoder().decode([BranchRecord].self, from: Data(branches.utf8)),
                    deadline: deadline, attempts: Int(attempts), createdAt: created
                )
            )
        }
        return result
    }

    static let viewColumns = """
        id, mode, status, phase, error_message, branches::text, attempts,
        to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        CASE WHEN status = 'pending' OR (status = 'failed' AND mode = 'saga')
             THEN to_char(next_retry_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') END
        """

    static func decodeViews(_ rows: PostgresRowSequence) async throws -> [TransactionView] {
        var result: [TransactionView] = []
        for try await (id, mode, status, phase, error, branches, attempts, created, updated, next) in rows.decode(
            (Int64, String, String, String, String?, String, Int32, String, String, String?).self
        ) {
            guard let mode = Mode(rawValue: mode), let status = GlobalStatus(rawValue: status) else { continue }
            result.append(
                TransactionView(
                    id: id, mode: mode, status: status, phase: phase, decision: Phase(rawValue: phase)?.decision,
                    errorMessage: error, branches: try WireJSON.decoder().decode([BranchRecord].self, from: Data(branches.utf8)),
                    attempts: Int(attempts), createdAt: created, updatedAt: updated, nextRetryAt: next
                )
            )
        }
        return result
    }
}


public enum CoordinatorError: Error, CustomStringConvertible {
    case logWriteFailed(String)
    public var description: String {
        switch self {
        case .logWriteFailed(let reason): "the coordinator log could not be written: \(reason)"
        }
    }
}
