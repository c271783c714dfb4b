import DTXPostgres
import Foundation
import DTXProtocol
import Logging
import PostgresNIO

/// The participant's database work: every branch operation is ONE statement, a server-side function of
/// sql/participant/004 that does the barrier insert, the stock change and the row change in the statement's own
/// transaction (DESIGN section 4): one database round trip per operation (XA prepare: BEGIN, the function,
/// PREPARE TRANSACTION, which PostgreSQL allows no fewer of through the extended protocol).
///
/// Barrier rules, by one unique key `(gid, branch_id, op)`:
/// - the current op's row is already there: a duplicate, succeed without touching stock;
/// - an undo (cancel / compensate / rollback) also inserts its origin op's row: if that insert succeeds, the origin
///   never ran: a null compensation, succeed without touching stock, and the late origin then finds its row taken;
/// - an undo of a row past the commit point (`confirm`, `confirm_pending`) is refused and changes nothing.
public struct StockLedger: Sendable {
    let client: PostgresClient
    let service: String
    /// The database's OID: part of XA gids, which are unique per server, not per database.
    let databaseOID: Int64
    let lockTimeout: Duration
    /// How long one operation may take in the database before it is given up (503); see `withDeadline`.
    let operationTimeout: Duration
    /// False when the server has max_prepared_transactions = 0: prepares are refused (409 xa_unavailable).
    let xaEnabled: Bool
    let logger: Logger

    public init(
        client: PostgresClient, service: String, databaseOID: Int64, lockTimeout: Duration, operationTimeout: Duration = .seconds(5),
        xaEnabled: Bool, logger: Logger
    ) {
        self.client = client
        self.service = service
        self.databaseOID = databaseOID
        self.lockTimeout = lockTimeout
        self.operationTimeout = operationTimeout
        self.xaEnabled = xaEnabled
        self.logger = logger
    }

    var lockTimeoutMilliseconds: Int32 { Int32(clamping: max(lockTimeout.inMilliseconds, 1)) }

    /// Runs one branch operation. `coordinator` is the calling coordinator's URL, stored with a new branch. Gives up
    /// after `operationTimeout` (503 database_unavailable): the operation may still land later, which the barrier makes
    /// harmless.
    /// `thenFinalize` (TCC confirm only): finalize in the same statement (`dtx_confirm_finalize`).
    public func perform(_ op: BranchOperation, _ request: BranchRequest, coordinator: String? = nil, thenFinalize: Bool = false) async throws -> BranchResponse {
        try await bounded { try await self.performNow(op, request, coordinator: coordinator, thenFinalize: thenFinalize) }
    }

    /// `body` within `operationTimeout`, else 503 database_unavailable.
    func bounded<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        do {
            return try await withDeadline(operationTimeout, body)
        } catch is DeadlineExceeded {
            throw ProtocolError(.databaseUnavailable, "the database did not answer within \(operationTimeout): retry")
        }
    }

    private func performNow(_ op: BranchOperation, _ request: BranchRequest, coordinator: String?, thenFinalize: Bool) async throws -> BranchResponse {
        do {
            switch op {
            case .tccTry, .sagaReserve:
                return try await firstPhase(op, request, coordinator: coordinator)
            case .xaPrepare:
                return try await prepare(request, coordinator: coordinator)
            case .xaCommit:
                return try await commitPrepared(request)
            case .xaRollback:
                return try await rollbackPrepared(request)
            case .tccConfirm, .tccFinalize, .sagaConfirm, .tccCancel, .sagaCompensate:
                switch try await secondPhase(op, [request], skipLocked: false, thenFinalize: thenFinalize)[0] {
                case .done(let response): return response
                case .refused(let error): throw error
                case .busy: throw ProtocolError(.lockTimeout, "the branch row is held by another transaction: retry")
                }
            }
        } catch {
            throw Self.translate(error)
        }
    }

    /// Runs many second-phase operations of one kind: one statement for all of them (TCC and Saga), or one round trip
    /// each, at once (XA). One item's refusal or failure never fails another, and every call is bounded on its own
    /// (`operationTimeout`), so the answer has every item.
    public func performBatch(_ op: BranchOperation, _ requests: [BranchRequest], thenFinalize: Bool = false) async -> [BranchBatchItem] {
        switch op {
        case .xaCommit, .xaRollback:
            return await withTaskGroup(of: (Int, BranchBatchItem).self) { group in
                for (index, request) in requests.enumerated() {
                    group.addTask { (index, await self.item(op, request) { try await self.perform(op, request) }) }
                }
                var items = [BranchBatchItem?](repeating: nil, count: requests.count)
                for await (index, item) in group { items[index] = item }
                return items.map { $0! }
            }
        default:
            let outcomes: [ItemOutcome]
            do {
                outcomes = try await bounded { try await self.secondPhase(op, requests, skipLocked: true, thenFinalize: thenFinalize) }
            } catch {
                let error = Self.translate(error) as? ProtocolError ?? ProtocolError(.databaseUnavailable, "\(error)")
                return requests.map { BranchBatchItem(workerEventId: $0.workerEventId, productId: $0.productId, httpStatus: error.httpStatus, result: nil, error: error) }
            }
            return await withTaskGroup(of: (Int, BranchBatchItem).self) { group in
                var items = [BranchBatchItem?](repeating: nil, count: requests.count)
                for (index, (request, outcome)) in zip(requests, outcomes).enumerated() {
                    switch outcome {
                    case .done(let response): items[index] = await item(op, request) { response }
                    case .refused(let error): items[index] = await item(op, request) { throw error }
                    // a row another transaction held: run it alone, waiting for the lock like a single call does; the
                    // busy items at once, so that together they wait one lock timeout, not one each
                    case .busy:
                        group.addTask { (index, await self.item(op, request) { try await self.perform(op, request, thenFinalize: thenFinalize) }) }
                    }
                }
                for await (index, item) in group { items[index] = item }
                return items.map { $0! }
            }
        }
    }

    private func item(_ op: BranchOperation, _ request: BranchRequest, _ body: () async throws -> BranchResponse) async -> BranchBatchItem {
        do {
            let result = try await body()
            return BranchBatchItem(workerEventId: request.workerEventId, productId: request.productId, httpStatus: 200, result: result, error: nil)
        } catch {
            let error = error as? ProtocolError ?? ProtocolError(.internalError, "\(error)")
            return BranchBatchItem(workerEventId: request.workerEventId, productId: request.productId, httpStatus: error.httpStatus, result: nil, error: error)
        }
    }

    // MARK: First phase (try, reserve): take stock, row 'try'

    func firstPhase(_ op: BranchOperation, _ request: BranchRequest, coordinator: String?) async throws -> BranchResponse {
        let rows = try await client.rows(firstPhaseStatement(op, request, rowStatus: .tried, coordinator: coordinator, xaGID: nil), logger: logger)
        for (effect, status) in rows {
            return try response(request, op, effect: effect, status: status)
        }
        throw ProtocolError(.internalError, "dtx_first_phase returned no row")
    }

    func firstPhaseStatement(_ op: BranchOperation, _ request: BranchRequest, rowStatus: RowStatus, coordinator: String?, xaGID: String?) -> FirstPhaseStatement {
        FirstPhaseStatement(
            op: op.rawValue, mode: op.mode.rawValue, rowStatus: rowStatus.rawValue, gid: request.workerEventId, branch: request.productId,
            quantity: request.quantity, service: service, lockTimeoutMilliseconds: lockTimeoutMilliseconds, notAfter: request.notAfter.flatMap(Timestamp.parse),
            coordinator: coordinator, xaGID: xaGID
        )
    }

    // MARK: Second phase (confirm, finalize, saga confirm, cancel, compensate)

    /// What one second-phase item came to in the database.
    enum ItemOutcome: Sendable {
        case done(BranchResponse)
        case refused(ProtocolError)
        /// A batch item whose row (or product row) another transaction held: not run, to be run alone.
        case busy
    }

    /// The forward moves and undos, as `dtx_advance` and `dtx_undo` take them.
    static func plan(_ op: BranchOperation) -> (function: String, from: RowStatus?, to: RowStatus, set: [RowStatus])? {
        switch op {
        case .tccConfirm: ("dtx_advance", .tried, .confirmPending, [.confirmPending, .confirmed])
        case .tccFinalize: ("dtx_advance", .confirmPending, .confirmed, [.confirmed])
        case .sagaConfirm: ("dtx_advance", .tried, .confirmed, [.confirmed])
        // undo: `set` are the row states it may reverse
        case .tccCancel: ("dtx_undo", nil, .cancelled, [.tried])
        case .sagaCompensate: ("dtx_undo", nil, .compensated, [.tried])
        default: nil
        }
    }

    func secondPhase(_ op: BranchOperation, _ requests: [BranchRequest], skipLocked: Bool, thenFinalize: Bool = false) async throws -> [ItemOutcome] {
        guard let plan = Self.plan(op) else { throw ProtocolError(.badRequest, "\(op.rawValue) is not a second-phase operation of TCC or Saga") }
        guard !thenFinalize || op == .tccConfirm else { throw ProtocolError.badRequest("only a TCC confirm can finalize in the same call, not \(op.rawValue)") }
        let gids = requests.map(\.workerEventId)
        let branches = requests.map(\.productId)
        let set = plan.set.map(\.rawValue)
        let rows: [(Int32, String, String?, String?)]
        if thenFinalize {
            rows = try await client.rows(ConfirmFinalizeStatement(
                gids: gids, branches: branches, lockTimeoutMilliseconds: lockTimeoutMilliseconds, skipLocked: skipLocked
            ), logger: logger)
        } else if let from = plan.from {
            rows = try await client.rows(SecondPhaseStatement<AdvanceFunction>(
                op: op.rawValue, originOrFrom: from.rawValue, gids: gids, branches: branches, set: set, to: plan.to.rawValue,
                lockTimeoutMilliseconds: lockTimeoutMilliseconds, skipLocked: skipLocked, mode: op.mode.rawValue
            ), logger: logger)
        } else {
            rows = try await client.rows(SecondPhaseStatement<UndoFunction>(
                op: op.rawValue, originOrFrom: op.origin!.rawValue, gids: gids, branches: branches, set: set, to: plan.to.rawValue,
                lockTimeoutMilliseconds: lockTimeoutMilliseconds, skipLocked: skipLocked, notAfters: requests.map(Self.undoNotAfter),
                mode: op.mode.rawValue
            ), logger: logger)
        }
        let function = thenFinalize ? "dtx_confirm_finalize" : plan.function
        // each row names its item (1-based): placed by that, not by the order the rows came in
        var items = [ItemOutcome?](repeating: nil, count: requests.count)
        for (index, effect, status, refusal) in rows {
            guard requests.indices.contains(Int(index) - 1), items[Int(index) - 1] == nil else {
                throw ProtocolError(.internalError, "\(function) answered item \(index) of \(requests.count) twice or out of range")
            }
            let request = requests[Int(index) - 1]
            if effect == "busy" {
                items[Int(index) - 1] = .busy
            } else if let refusal {
                items[Int(index) - 1] = .refused(refusalError(ProtocolError.Code(rawValue: refusal), op, request, status: status))
            } else {
                items[Int(index) - 1] = .done(try response(request, op, effect: effect, status: status))
            }
        }
        let answered = items.compactMap { $0 }
        guard answered.count == requests.count else { throw ProtocolError(.internalError, "\(function) answered \(answered.count) of \(requests.count) items") }
        return answered
    }

    /// A request's `not_after` as dtx_undo takes it: UTC text in the wire form, '' for none. Never the client's own
    /// text: PostgreSQL reads no offset past 15:59 and no year 0, both of which RFC 3339 allows; a time before 1970
    /// (long past, as far as retention is concerned) is written as 1970.
    static func undoNotAfter(_ request: BranchRequest) -> String {
        guard let date = request.notAfter.flatMap(Timestamp.parse) else { return "" }
        return Timestamp.string(max(date, Date(timeIntervalSince1970: 0)))
    }

    func refusalError(_ code: ProtocolError.Code, _ op: BranchOperation, _ request: BranchRequest, status: String?) -> ProtocolError {
        let branch = "branch \(request.workerEventId)/\(request.productId)"
        switch code {
        case .branchNotTried: return ProtocolError(code, "\(branch) has no row at \(service): it was never tried")
        case .branchCancelled: return ProtocolError(code, "\(branch) is \(status ?? "rolled back"): it cannot \(op.rawValue)")
        case .branchConfirmed: return ProtocolError(code, "\(branch) is \(status ?? "committed"): \(op.rawValue) after the commit point is refused")
        case .branchConflict: return ProtocolError(code, "\(branch) is a branch of another mode here: \(op.mode.rawValue) \(op.rawValue) is refused")
        default: return ProtocolError(code, "\(branch) is \(status ?? "missing"): \(op.rawValue) is refused")
        }
    }

    func response(_ request: BranchRequest, _ op: BranchOperation, effect: String, status: String?) throws -> BranchResponse {
        guard let effect = BranchResponse.Effect(rawValue: effect) else { throw ProtocolError(.internalError, "unknown effect \(effect)") }
        var rowStatus: RowStatus?
        if let status {
            guard let parsed = RowStatus(rawValue: status) else { throw ProtocolError(.internalError, "unknown row status \(status)") }
            rowStatus = parsed
        }
        return BranchResponse(workerEventId: request.workerEventId, productId: request.productId, operation: op, effect: effect, status: rowStatus)
    }

    // MARK: Errors

    /// dtx's own SQLSTATE class `DX` (sql/participant/004): the refusals of the first phase.
    static let refusals: [String: ProtocolError.Code] = [
        "DX001": .insufficientStock, "DX002": .unknownProduct, "DX003": .branchCancelled, "DX004": .branchConfirmed,
        "DX005": .branchNotTried, "DX006": .branchConflict, "DX007": .invalidState, "DX008": .deadlinePassed, "DX009": .branchPruned,
    ]

    /// PostgreSQL errors: dtx refusals become their 409s, lock waits and database trouble 503s the caller retries.
    static func translate(_ error: any Error) -> any Error {
        if error is ProtocolError { return error }
        guard let state = error.sqlState else { return ProtocolError(.databaseUnavailable, "database error: \(error)") }
        if let code = refusals[state] { return ProtocolError(code, error.postgresMessage) }
        switch state {
        case SQLState.lockNotAvailable.rawValue:
            return ProtocolError(.lockTimeout, "a row lock was not granted in time: retry")
        case SQLState.serializationFailure.rawValue, SQLState.deadlockDetected.rawValue:
            return ProtocolError(.lockTimeout, "\(error.postgresMessage): retry")
        default:
            return ProtocolError(.databaseUnavailable, error.postgresMessage)
        }
    }

    // MARK: Reads

    public func product(id: Int64) async throws -> Product? {
        try await bounded { try await self.productNow(id: id) }
    }

    private func productNow(id: Int64) async throws -> Product? {
        for row in try await client.rows("SELECT id, name, stock FROM products WHERE id = \(id)", logger: logger) {
            let (id, name, stock) = try row.decode((Int64, String, Int64).self)
            return Product(id: id, name: name, stock: stock)
        }
        return nil
    }

    public func branchStatus(workerEventId: Int64, productId: Int64) async throws -> BranchStatus {
        try await bounded { try await self.branchStatusNow(workerEventId: workerEventId, productId: productId) }
    }

    private func branchStatusNow(workerEventId: Int64, productId: Int64) async throws -> BranchStatus {
        let rows = try await client.rows(
            "SELECT status, quantity FROM transactions WHERE worker_event_id = \(workerEventId) AND product_id = \(productId)",
            logger: logger
        )
        for row in rows {
            let (status, quantity) = try row.decode((String, Int64).self)
            return BranchStatus(workerEventId: workerEventId, productId: productId, status: RowStatus(rawValue: status), quantity: quantity)
        }
        return BranchStatus(workerEventId: workerEventId, productId: productId, status: nil, quantity: nil)
    }
}
