import DTXPostgres
import DTXProtocol
import PostgresNIO

/// XA branches on PostgreSQL's native two-phase commit.
///
/// The gid is `dtx-<database oid>-<service>-<worker_event_id>-<product_id>`: made from integers and the validated
/// service name, never from request text, because PREPARE TRANSACTION / COMMIT PREPARED take no bind parameters.
/// gids are unique per server, not per database: the database's OID and the service name keep two services (or two
/// dtx installations) on one server apart.
extension StockLedger {
    func gid(_ request: BranchRequest) -> String {
        "\(gidPrefix)\(request.workerEventId)-\(request.productId)"
    }

    /// The prefix of this service's gids, for finding its in-doubt transactions.
    var gidPrefix: String { "dtx-\(databaseOID)-\(service)-" }

    func isPrepared(_ connection: PostgresConnection, gid: String) async throws -> Bool {
        try await connection.query("SELECT 1 FROM pg_prepared_xacts WHERE gid = \(gid)", logger: logger).count() == 1
    }

    /// BEGIN; barrier; take stock; row 'confirm'; PREPARE TRANSACTION. The row and the stock change become visible
    /// at COMMIT PREPARED; until then the prepared transaction holds the product's row lock.
    func prepare(_ request: BranchRequest) async throws -> BranchResponse {
        let gid = self.gid(request)
        do {
            return try await client.withConnection { connection in
                if try await isPrepared(connection, gid: gid) { return response(request, .xaPrepare, .duplicate, nil) }
                try await connection.query("BEGIN", logger: logger)
                do {
                    try await connection.query(lockTimeoutSQL, logger: logger)
                    guard try await barrier(connection, request, .xaPrepare) else {
                        try await connection.query("ROLLBACK", logger: logger)
                        return try await self.afterPrepareBarrierTaken(connection, request)
                    }
                    try await takeStock(connection, request)
                    try await insertRow(connection, request, status: .confirmed, mode: .xa)
                    try await connection.query(PostgresQuery(unsafeSQL: "PREPARE TRANSACTION '\(gid)'"), logger: logger)
                    return response(request, .xaPrepare, .applied, nil)
                } catch {
                    // After a failed statement the session is in an aborted transaction; after a failed PREPARE it
                    // may be in none. ROLLBACK is right (or harmless) in both.
                    _ = try? await connection.query("ROLLBACK", logger: logger).count()
                    throw error
                }
            }
        } catch {
            throw Self.translate(error)
        }
    }

    /// The prepare barrier row is already committed: the branch was committed (its row exists) or rolled back.
    private func afterPrepareBarrierTaken(_ connection: PostgresConnection, _ request: BranchRequest) async throws -> BranchResponse {
        let status = try await connection.query(
            "SELECT status FROM transactions WHERE worker_event_id = \(request.workerEventId) AND product_id = \(request.productId)",
            logger: logger
        ).count()
        if status == 1 { return response(request, .xaPrepare, .duplicate, .confirmed) }
        throw ProtocolError(.branchCancelled, "branch \(request.workerEventId)/\(request.productId) was rolled back before this prepare arrived")
    }

    /// COMMIT PREPARED. "Does not exist" after an earlier commit is success.
    func commitPrepared(_ request: BranchRequest) async throws -> BranchResponse {
        let gid = self.gid(request)
        do {
            try await client.query(PostgresQuery(unsafeSQL: "COMMIT PREPARED '\(gid)'"), logger: logger)
            return response(request, .xaCommit, .applied, .confirmed)
        } catch where error.hasSQLState(.undefinedObject) {
            let status = try await branchStatus(workerEventId: request.workerEventId, productId: request.productId)
            if status.status == .confirmed { return response(request, .xaCommit, .duplicate, .confirmed) }
            let rolledBack = try await client.query(
                "SELECT 1 FROM barrier WHERE gid = \(request.workerEventId) AND branch_id = \(request.productId) AND op = 'rollback'",
                logger: logger
            ).count() == 1
            throw rolledBack
                ? ProtocolError(.branchCancelled, "branch \(request.workerEventId)/\(request.productId) was rolled back: it cannot commit")
                : ProtocolError(.branchNotTried, "branch \(request.workerEventId)/\(request.productId) was never prepared at \(service)")
        } catch {
            throw Self.translate(error)
        }
    }

    /// ROLLBACK PREPARED, then the barrier rows so that a late prepare does nothing.
    ///
    /// A prepare still in flight holds its uncommitted barrier row: the insert here waits for it and gives up at
    /// `lock_timeout` with a 503; the retry then finds the transaction prepared and rolls it back.
    func rollbackPrepared(_ request: BranchRequest) async throws -> BranchResponse {
        let gid = self.gid(request)
        var rolledBack = false
        do {
            try await client.query(PostgresQuery(unsafeSQL: "ROLLBACK PREPARED '\(gid)'"), logger: logger)
            rolledBack = true
        } catch where error.hasSQLState(.undefinedObject) {
            // not prepared (any more): go on to the barrier
        } catch {
            throw Self.translate(error)
        }
        let undoneBefore = rolledBack
        return try await transaction { connection in
            let originIsNew = try await barrier(connection, request, .xaPrepare)
            let opIsNew = try await barrier(connection, request, .xaRollback)
            if !originIsNew, try await row(connection, request) != nil {
                throw ProtocolError(.branchConfirmed, "branch \(request.workerEventId)/\(request.productId) is committed: rollback is refused")
            }
            if undoneBefore { return response(request, .xaRollback, .applied, nil) }
            if !opIsNew { return response(request, .xaRollback, .duplicate, nil) }
            return response(request, .xaRollback, originIsNew ? .nullCompensation : .applied, nil)
        }
    }

    /// This service's prepared transactions older than `olderThan`, as (worker_event_id, product_id).
    func inDoubt(olderThan: Duration) async throws -> [BranchRequest] {
        let rows = try await client.query(
            """
            SELECT gid FROM pg_prepared_xacts
            WHERE database = current_database() AND starts_with(gid, \(gidPrefix))
              AND prepared < now() - make_interval(secs => \(olderThan.inSeconds))
            """,
            logger: logger
        )
        var found: [BranchRequest] = []
        for try await gid in rows.decode(String.self) {
            let parts = gid.dropFirst(gidPrefix.count).split(separator: "-")
            guard parts.count == 2, let worker = Int64(parts[0]), let product = Int64(parts[1]) else { continue }
            // quantity is not needed to commit or roll back; 1 keeps the request valid
            found.append(BranchRequest(workerEventId: worker, productId: product, quantity: 1))
        }
        return found
    }
}
