import DTXPostgres
import DTXProtocol
import Foundation
import Logging
import PostgresNIO

/// The coordinator's durable log: the `worker_events` table, written through the functions of sql/coordinator/002,
/// one round trip per write.
///
/// Every write that moves a transaction is fenced by the lease epoch its driver got when it began or claimed the row,
/// and compares the phase it read: a driver that lost the row (it stalled past its lease and another driver claimed
/// it) finds its write refused (`LeaseLost`) and stops before it calls another participant.
public struct TransactionLog: Sendable {
    let client: PostgresClient
    /// A label for people: the coordinator's --instance-id.
    let owner: String
    /// This process's holder number (see `HolderLock`).
    let holder: Int64
    let lease: Duration
    let ids: IdAllocator
    let machines: ModeMachines
    let logger: Logger
    /// Group commit of the first records and of the moves (see `Batcher`); nil writes each alone.
    let batching: (window: Duration, maxItems: Int)?
    private let begins: Batcher<Int, BeginStatement.Item, Result<BeginStatement.Row, any Error>>?
    private let records: Batcher<Bool, RecordStatement.Item, Result<Bool, any Error>>?

    init(
        client: PostgresClient, owner: String, holder: Int64, lease: Duration, ids: IdAllocator, machines: ModeMachines,
        globalTimeout: Duration = .seconds(10), callTimeout: Duration = .seconds(10), batching: (window: Duration, maxItems: Int)? = nil,
        logger: Logger
    ) {
        self.client = client
        self.owner = owner
        self.holder = holder
        self.lease = lease
        self.ids = ids
        self.machines = machines
        self.logger = logger
        self.batching = batching
        self.callTimeout = callTimeout
        let writer = LogWriter(
            client: client, owner: owner, holder: holder, lease: lease, globalTimeout: globalTimeout, callTimeout: callTimeout, logger: logger
        )
        self.writer = writer
        if let batching {
            begins = Batcher(window: batching.window, maxItems: batching.maxItems) { _, items in await writer.begin(items) }
            records = Batcher(window: batching.window, maxItems: batching.maxItems) { durable, items in await writer.record(items, durable: durable) }
        } else {
            begins = nil
            records = nil
        }
    }

    private let writer: LogWriter
    /// A bound on every call to the log's database (see `withDeadline`).
    let callTimeout: Duration

    /// `body` within `callTimeout`: a call PostgresNIO lost fails instead of hanging its driver or the recovery loop.
    private func bounded<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withDeadline(callTimeout, body)
    }

    /// This driver no longer holds the transaction: another driver claimed it, or its lease ran out.
    public struct LeaseLost: Error, CustomStringConvertible {
        public var id: Int64
        public var description: String { "worker_event \(id): the lease was lost (another driver holds it now, or it ran out)" }
    }

    /// When a lease taken or renewed by a statement sent at `sent` runs out by this process's clock, less a margin.
    /// Counted from the send, not the answer: the database may have written the lease long before its answer came.
    func leaseValidUntil(sent: ContinuousClock.Instant) -> ContinuousClock.Instant { sent + lease - min(.seconds(2), lease / 4) }

    /// What `begin` found.
    enum Begun {
        /// Logged now, held by this coordinator.
        case created(GlobalTransaction)
        /// The idempotency key is in the log already; `sameRequest` tells whether with this request.
        case existing(id: Int64, sameRequest: Bool)
    }

    /// Logs a new global transaction, `pending` in its mode's first phase, held by this coordinator with epoch 1. The
    /// write does not wait for its WAL flush (presumed abort, see sql/coordinator/002).
    func begin(
        mode: Mode, request: TransactionRequest, branches: [BranchRecord], globalTimeout: Duration, idempotencyKey: String?
    ) async throws -> Begun {
        let newID = try await ids.next()
        // after the id (a new block may take a round trip): the lease and the first phase are counted from here
        let sent = ContinuousClock.now
        let item = BeginStatement.Item(
            id: newID, mode: mode.rawValue, phase: machines[mode].firstPhase,
            request: String(decoding: try WireJSON.encoder().encode(request), as: UTF8.self),
            branches: String(decoding: try WireJSON.encoder().encode(branches), as: UTF8.self), idempotencyKey: idempotencyKey
        )
        let outcome = if let begins { await begins.submit(0, item) } else { await writer.begin([item])[0] }
        let (_, created, same, id, status, _, phase, error, _, deadline, attempts, createdAt, epoch, left) = try outcome.get()
        guard created else { return .existing(id: id, sameRequest: same) }
        guard let status = GlobalStatus(rawValue: status) else { throw CoordinatorError.logWriteFailed("worker_event \(id) has an unknown status") }
        // the row as written: its branches are the ones just sent (not parsed back from the answer)
        return .created(GlobalTransaction(
            id: id, mode: mode, status: status, phase: phase, errorMessage: error, branches: branches, deadline: deadline,
            firstPhaseEnds: Self.firstPhaseEnds(sent: sent, left: left), attempts: Int(attempts), createdAt: createdAt, epoch: epoch,
            leaseValidUntil: leaseValidUntil(sent: sent)
        ))
    }

    /// Writes the transaction's status, phase, error and branches if this driver still holds it with its epoch and it
    /// is still in `expectedPhase`; renews the lease, or gives the row back once it is no longer open.
    /// Returns false when the write was refused (the lease was lost).
    func record(_ transaction: GlobalTransaction, expectedPhase: String, durable: Bool) async throws -> Bool {
        let item = RecordStatement.Item(
            id: transaction.id, epoch: transaction.epoch, expectedPhase: expectedPhase, status: transaction.status.rawValue,
            phase: transaction.phase, error: transaction.errorMessage,
            branches: String(decoding: try WireJSON.encoder().encode(transaction.branches), as: UTF8.self), release: !transaction.isOpen
        )
        let outcome = if let records { await records.submit(durable, item) } else { await writer.record([item], durable: durable)[0] }
        return try outcome.get()
    }

    /// Gives the transaction back to the recovery loop, to be tried again after `delay`.
    func postpone(_ transaction: GlobalTransaction, delay: Duration) async throws {
        let branchesJSON = String(decoding: try WireJSON.encoder().encode(transaction.branches), as: UTF8.self)
        let (client, logger) = (self.client, self.logger)
        try await bounded { _ = try await client.rows(
            """
            SELECT dtx_postpone(\(transaction.id), \(transaction.epoch), \(transaction.phase), \(branchesJSON)::jsonb, \(delay.inSeconds))
            """,
            logger: logger
        ) }
    }

    /// Claims up to `limit` open transactions that are due and held by nobody alive (or whose lease ended), each with a
    /// new epoch. `FOR UPDATE SKIP LOCKED` keeps two coordinators from claiming the same row at once.
    func claim(limit: Int) async throws -> [GlobalTransaction] {
        try await bounded { try await self.claimNow(limit: limit) }
    }

    private func claimNow(limit: Int) async throws -> [GlobalTransaction] {
        let sent = ContinuousClock.now
        let rows = try await client.rows(
            """
            SELECT id, status, mode, phase, error_message, branches, deadline_at, attempts, created_at, lease_epoch,
                   extract(epoch FROM deadline_at)::float8 - extract(epoch FROM now())::float8
            FROM dtx_claim(\(owner), \(holder), \(limit), \(lease.inSeconds))
            """,
            logger: logger
        )
        var result: [GlobalTransaction] = []
        for row in rows {
            let (id, status, mode, phase, error, branches, deadline, attempts, createdAt, epoch, left) = try row.decode(
                (Int64, String, String, String, String?, String, Date, Int32, Date, Int64, Double).self
            )
            do {
                result.append(try transaction(
                    id, status, mode, phase, error, branches, deadline, attempts, createdAt, epoch, sent: sent, left: left
                ))
            } catch {
                // a row this version cannot read (written by hand, or by another version) must not take the rest of the
                // claim with it, nor come back every lease: it is set aside for an hour, still open, for an operator
                logger.error("a claimed transaction cannot be read: set aside for an hour", metadata: [
                    "dtx.worker_event_id": "\(id)", "dtx.error": "\(error)",
                ])
                _ = try? await client.rows(
                    "SELECT dtx_postpone(\(id), \(epoch), \(phase), \(branches)::jsonb, \(Self.unreadableDelay.inSeconds))", logger: logger
                )
            }
        }
        return result
    }

    /// How long a claimed row this version cannot read is set aside.
    static let unreadableDelay: Duration = .seconds(3600)

    func transaction(
        _ id: Int64, _ status: String, _ mode: String, _ phase: String, _ error: String?, _ branches: String, _ deadline: Date,
        _ attempts: Int32, _ createdAt: Date, _ epoch: Int64, sent: ContinuousClock.Instant, left: Double
    ) throws -> GlobalTransaction {
        guard let status = GlobalStatus(rawValue: status), let mode = Mode(rawValue: mode) else {
            throw CoordinatorError.logWriteFailed("worker_event \(id) has an unknown status or mode")
        }
        return GlobalTransaction(
            id: id, mode: mode, status: status, phase: phase, errorMessage: error,
            branches: try WireJSON.decoder().decode([BranchRecord].self, from: Data(branches.utf8)),
            deadline: deadline, firstPhaseEnds: Self.firstPhaseEnds(sent: sent, left: left), attempts: Int(attempts), createdAt: createdAt,
            epoch: epoch, leaseValidUntil: leaseValidUntil(sent: sent)
        )
    }

    /// The first phase's end on this process's clock: `left` seconds (by the log server's clock, from when the
    /// statement began) after `sent` (when this process sent it, which is earlier: the deadline errs short, never long).
    /// Before, the driver compared `deadline_at` with its own wall clock: a process clock ahead of the server's by the
    /// global timeout made every first phase "out of time" before its first call (every transaction refused), one
    /// behind let it run past the driver's lease.
    static func firstPhaseEnds(sent: ContinuousClock.Instant, left: Double) -> ContinuousClock.Instant {
        guard !left.isNaN else { return sent }
        return sent + .milliseconds(Int64(max(-1e9, min(1e9, left * 1000))))  // (a deadline written as infinity: far off)
    }

    // MARK: Reads

    public func view(id: Int64) async throws -> TransactionView? {
        try await bounded { try await self.viewNow(id: id) }
    }

    private func viewNow(id: Int64) async throws -> TransactionView? {
        let rows = try await client.rows("SELECT \(unescaped: Self.viewColumns) FROM worker_events WHERE id = \(id)", logger: logger)
        if let view = try decodeViews(rows).first { return view }
        // a row this version cannot read (a mode or status of a newer version, during a rolling upgrade) is not "no row":
        // nil is answered "it never began here", which a participant takes as an abort
        guard rows.isEmpty else {
            throw ProtocolError(.internalError, "worker_event \(id) has a mode or status this version does not know: ask a coordinator of its version")
        }
        return nil
    }

    /// Whether `id` is one this log may have handed out (below its next block of ids) and has not pruned (above the
    /// highest id retention deleted): a transaction it has no row for then never began, or its first record was lost
    /// in a crash of this database (presumed abort).
    public func mayHaveIssued(id: Int64) async throws -> Bool {
        try await bounded { try await self.mayHaveIssuedNow(id: id) }
    }

    private func mayHaveIssuedNow(id: Int64) async throws -> Bool {
        for row in try await client.rows("SELECT next_id, pruned_through FROM worker_event_ids", logger: logger) {
            let (next, pruned) = try row.decode((Int64, Int64).self)
            return id < next && id > pruned
        }
        return false
    }

    /// How many transactions are open (not final yet).
    public func openCount() async throws -> Int64 {
        try await bounded { try await self.openCountNow() }
    }

    private func openCountNow() async throws -> Int64 {
        for row in try await client.rows("SELECT count(*) FROM worker_events WHERE open", logger: logger) {
            return try row.decode(Int64.self)
        }
        return 0
    }

    /// A page of transactions, newest first, with the cursor of the next page (nil on the last).
    public func list(status: GlobalStatus?, mode: Mode?, limit: Int, cursor: Int64?) async throws -> TransactionList {
        try await bounded { try await self.listNow(status: status, mode: mode, limit: limit, cursor: cursor) }
    }

    private func listNow(status: GlobalStatus?, mode: Mode?, limit: Int, cursor: Int64?) async throws -> TransactionList {
        var conditions: [String] = []
        var bindings = PostgresBindings()
        if let status {
            bindings.append(status.rawValue)
            conditions.append("status = $\(bindings.count)")
        }
        if let mode {
            bindings.append(mode.rawValue)
            conditions.append("mode = $\(bindings.count)")
        }
        if let cursor {
            bindings.append(cursor)
            conditions.append("id < $\(bindings.count)")
        }
        bindings.append(limit + 1)
        let filter = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        let query = PostgresQuery(
            unsafeSQL: "SELECT \(Self.viewColumns) FROM worker_events \(filter) ORDER BY id DESC LIMIT $\(bindings.count)",
            binds: bindings
        )
        let rows = try await client.rows(query, logger: logger)
        var views = try decodeViews(rows)
        var next: String?
        // the page ends at the limit-th row fetched, whether or not this version could read it: counting only the rows
        // it read, a row it cannot read (a newer version's status) ended the paging there, every older row out of reach
        if rows.count > limit {
            let last = try rows[limit - 1].makeRandomAccess()["id"].decode(Int64.self)
            views.removeAll { $0.id < last }
            next = "\(last)"
        }
        return TransactionList(transactions: views, next: next)
    }

    /// (A time written by hand as 'infinity' has no `to_char`: it is shown as PostgreSQL writes it, not a failed page.)
    static let viewColumns = """
        id, mode, status, phase, error_message, branches::text, attempts,
        coalesce(to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), created_at::text),
        coalesce(to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), updated_at::text),
        CASE WHEN open THEN to_char(next_retry_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') END
        """

    func decodeViews(_ rows: [PostgresRow]) throws -> [TransactionView] {
        var result: [TransactionView] = []
        for row in rows {
            let (id, mode, status, phase, error, branches, attempts, created, updated, next) = try row.decode(
                (Int64, String, String, String, String?, String, Int32, String, String, String?).self
            )
            guard let mode = Mode(rawValue: mode), let status = GlobalStatus(rawValue: status) else { continue }
            // a row whose branches this version cannot read (written by hand, or by a newer version: a state it does not
            // know) is still shown, with no branches and the reason, as recovery sets it aside: one such row must not
            // fail the list, the detail view and the status page that an operator would find it with
            var records: [BranchRecord] = []
            var errorMessage = error
            do {
                records = try WireJSON.decoder().decode([BranchRecord].self, from: Data(branches.utf8))
            } catch _ {
                errorMessage = (errorMessage.map { "\($0); " } ?? "") + "branches unreadable by this version: \(branches.prefix(500))"
            }
            result.append(
                TransactionView(
                    id: id, mode: mode, status: status, phase: phase, decision: machines[mode].decision(in: phase),
                    errorMessage: errorMessage, branches: records,
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
