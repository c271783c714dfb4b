import DTXPostgres
import DTXProtocol
import Logging
import PostgresNIO

/// The participant's database work: every branch operation as ONE local transaction that holds its barrier insert,
/// its stock change and its `transactions` row change (DESIGN section 4).
///
/// Barrier rules, by one unique key `(gid, branch_id, op)`:
/// - the current op's row is already there: a duplicate, succeed without touching stock;
/// - an undo (cancel / compensate / rollback) also inserts its origin op's row: if that insert succeeds, the origin
///   never ran: a null compensation, succeed without touching stock, and the late origin then finds its row taken.
public struct StockLedger: Sendable {
    let client: PostgresClient
    let service: String
    /// The database's OID: part of XA gids, which are unique per server, not per database.
    let databaseOID: Int64
    let lockTimeout: Duration
    let logger: Logger

    public init(client: PostgresClient, service: String, databaseOID: Int64, lockTimeout: Duration, logger: Logger) {
        self.client = client
        self.service = service
        self.databaseOID = databaseOID
        self.lockTimeout = lockTimeout
        self.logger = logger
    }

    var lockTimeoutSQL: PostgresQuery { settingsSQL(durable: true) }

    /// `lock_timeout` for this transaction, and for a second-phase operation `synchronous_commit = off`, in one
    /// round trip.
    ///
    /// Why a second-phase operation (confirm, finalize, cancel, compensate) need not wait for its WAL flush: if the
    /// machine crashes and loses it, the row is back in `try`, and both the coordinator (which retries until it has
    /// logged the transaction final) and this participant's reconciler (which asks the coordinator about stale `try`
    /// rows) apply it again. A first-phase operation must be durable before it answers: the coordinator decides on it.
    func settingsSQL(durable: Bool) -> PostgresQuery {
        let ms = max(lockTimeout.inMilliseconds, 1)
        return durable
            ? PostgresQuery(unsafeSQL: "SELECT set_config('lock_timeout', '\(ms)ms', true)")
            : PostgresQuery(unsafeSQL: "SELECT set_config('lock_timeout', '\(ms)ms', true), set_config('synchronous_commit', 'off', true)")
    }

    /// One local transaction with `lock_timeout` set; a lock wait past it becomes a 503 the caller retries.
    func transaction<Result: Sendable>(durable: Bool = true, _ body: (PostgresConnection) async throws -> Result) async throws -> Result {
        do {
            return try await client.transaction(logger: logger) { connection in
                try await connection.query(settingsSQL(durable: durable), logger: logger)
                return try await body(connection)
            }
        } catch {
            throw Self.translate(error)
        }
    }

    /// PostgreSQL errors a caller should retry become 503 protocol errors; business errors pass through.
    static func translate(_ error: any Error) -> any Error {
        if error is ProtocolError { return error }
        switch error.sqlState {
        case SQLState.lockNotAvailable.rawValue:
            return ProtocolError(.lockTimeout, "a row lock was not granted in time: retry")
        case SQLState.serializationFailure.rawValue, SQLState.deadlockDetected.rawValue:
            return ProtocolError(.lockTimeout, "\(error.postgresMessage): retry")
        case .some:
            return ProtocolError(.databaseUnavailable, error.postgresMessage)
        case .none:
            return ProtocolError(.databaseUnavailable, "database error: \(error)")
        }
    }

    // MARK: Shared steps

    /// Inserts a barrier row; true when it was inserted now, false when it was there already.
    func barrier(_ connection: PostgresConnection, _ request: BranchRequest, _ op: BranchOperation) async throws -> Bool {
        try await connection.query(
            """
            INSERT INTO barrier (gid, branch_id, op) VALUES (\(request.workerEventId), \(request.productId), \(op.rawValue))
            ON CONFLICT DO NOTHING RETURNING 1
            """,
            logger: logger
        ).count() == 1
    }

    /// The branch row, locked for the rest of the transaction.
    func row(_ connection: PostgresConnection, _ request: BranchRequest) async throws -> (status: RowStatus, quantity: Int64, mode: String)? {
        let rows = try await connection.query(
            """
            SELECT status, quantity, mode FROM transactions
            WHERE worker_event_id = \(request.workerEventId) AND product_id = \(request.productId) FOR UPDATE
            """,
            logger: logger
        )
        for try await (status, quantity, mode) in rows.decode((String, Int64, String).self) {
            guard let status = RowStatus(rawValue: status) else { throw ProtocolError(.internalError, "unknown row status \(status)") }
            return (status, quantity, mode)
        }
        return nil
    }

    /// Takes `quantity` from the product's stock, or throws the 409 that says why not.
    func takeStock(_ connection: PostgresConnection, _ request: BranchRequest) async throws {
        let taken = try await connection.query(
            "UPDATE products SET stock = stock - \(request.quantity) WHERE id = \(request.productId) AND stock >= \(request.quantity) RETURNING stock",
            logger: logger
        ).count()
        guard taken == 0 else { return }
        let exists = try await connection.query("SELECT 1 FROM products WHERE id = \(request.productId)", logger: logger).count() == 1
        throw exists
            ? ProtocolError(.insufficientStock, "product \(request.productId) has less than \(request.quantity) in stock at \(service)")
            : ProtocolError(.unknownProduct, "product \(request.productId) does not exist at \(service)")
    }

    func returnStock(_ connection: PostgresConnection, productId: Int64, quantity: Int64) async throws {
        try await connection.query("UPDATE products SET stock = stock + \(quantity) WHERE id = \(productId)", logger: logger)
    }

    func insertRow(_ connection: PostgresConnection, _ request: BranchRequest, status: RowStatus, mode: Mode) async throws {
        do {
            try await connection.query(
                """
                INSERT INTO transactions (service, product_id, quantity, status, worker_event_id, mode)
                VALUES (\(service), \(request.productId), \(request.quantity), \(status.rawValue), \(request.workerEventId), \(mode.rawValue))
                """,
                logger: logger
            )
        } catch where error.hasSQLState(.uniqueViolation) {
            throw ProtocolError(.branchConflict, "worker_event \(request.workerEventId) already has a branch for product \(request.productId) in another mode")
        }
    }

    func setStatus(_ connection: PostgresConnection, _ request: BranchRequest, _ status: RowStatus) async throws {
        try await connection.query(
            """
            UPDATE transactions SET status = \(status.rawValue), updated_at = now()
            WHERE worker_event_id = \(request.workerEventId) AND product_id = \(request.productId)
            """,
            logger: logger
        )
    }

    func response(_ request: BranchRequest, _ op: BranchOperation, _ effect: BranchResponse.Effect, _ status: RowStatus?) -> BranchResponse {
        BranchResponse(workerEventId: request.workerEventId, productId: request.productId, operation: op, effect: effect, status: status)
    }

    // MARK: First phase (try, reserve): take stock, row 'try'

    func reserve(_ request: BranchRequest, op: BranchOperation) async throws -> BranchResponse {
        try await transaction { connection in
            guard try await barrier(connection, request, op) else {
                if let row = try await row(connection, request) { return response(request, op, .duplicate, row.status) }
                throw ProtocolError(.branchCancelled, "branch \(request.workerEventId)/\(request.productId) was cancelled before this \(op.rawValue) arrived")
            }
            try await takeStock(connection, request)
            try await insertRow(connection, request, status: .tried, mode: op.mode)
            return response(request, op, .applied, .tried)
        }
    }

    // MARK: Forward moves of an existing row (confirm, finalize, saga confirm)

    /// Moves the row from `from` to `to`; `done` are the states that mean the move has happened already.
    func advance(_ request: BranchRequest, op: BranchOperation, from: RowStatus, to: RowStatus, done: Set<RowStatus>) async throws -> BranchResponse {
        try await transaction(durable: false) { connection in
            let inserted = try await barrier(connection, request, op)
            guard let row = try await row(connection, request) else {
                throw ProtocolError(.branchNotTried, "branch \(request.workerEventId)/\(request.productId) has no row at \(service): it was never tried")
            }
            if row.status == from {
                try await setStatus(connection, request, to)
                return response(request, op, inserted ? .applied : .duplicate, to)
            }
            if done.contains(row.status) { return response(request, op, .duplicate, row.status) }
            if row.status == .cancelled || row.status == .compensated {
                throw ProtocolError(.branchCancelled, "branch \(request.workerEventId)/\(request.productId) is \(row.status.rawValue): it cannot \(op.rawValue)")
            }
            throw ProtocolError(.invalidState, "branch \(request.workerEventId)/\(request.productId) is \(row.status.rawValue): \(op.rawValue) needs \(from.rawValue)")
        }
    }

    // MARK: Undo (cancel, compensate): give stock back

    /// `undoable`: the row states this undo may reverse; a row in another state is refused (409).
    func undo(_ request: BranchRequest, op: BranchOperation, undoable: Set<RowStatus>, to: RowStatus) async throws -> BranchResponse {
        guard let origin = op.origin else { preconditionFailure("\(op) is not an undo") }
        return try await transaction(durable: false) { connection in
            let originIsNew = try await barrier(connection, request, origin)
            let opIsNew = try await barrier(connection, request, op)
            let row = try await row(connection, request)
            guard opIsNew else { return response(request, op, .duplicate, row?.status) }
            guard !originIsNew, let row else { return response(request, op, .nullCompensation, row?.status) }
            if row.status == to { return response(request, op, .duplicate, row.status) }
            guard undoable.contains(row.status) else {
                throw ProtocolError(.branchConfirmed, "branch \(request.workerEventId)/\(request.productId) is \(row.status.rawValue): \(op.rawValue) is refused")
            }
            try await returnStock(connection, productId: request.productId, quantity: row.quantity)
            try await setStatus(connection, request, to)
            return response(request, op, .applied, to)
        }
    }

    // MARK: Reads

    public func product(id: Int64) async throws -> Product? {
        for try await (id, name, stock) in try await client.query("SELECT id, name, stock FROM products WHERE id = \(id)", logger: logger)
            .decode((Int64, String, Int64).self)
        {
            return Product(id: id, name: name, stock: stock)
        }
        return nil
    }

    public func branchStatus(workerEventId: Int64, productId: Int64) async throws -> BranchStatus {
        let rows = try await client.query(
            "SELECT status, quantity FROM transactions WHERE worker_event_id = \(workerEventId) AND product_id = \(productId)",
            logger: logger
        )
        for try await (status, quantity) in rows.decode((String, Int64).self) {
            return BranchStatus(workerEventId: workerEventId, productId: productId, status: RowStatus(rawValue: status), quantity: quantity)
        }
        return BranchStatus(workerEventId: workerEventId, productId: productId, status: nil, quantity: nil)
    }
}
