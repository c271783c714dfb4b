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

    /// BEGIN; `dtx_first_phase` (barrier, stock, row 'confirm'); PREPARE TRANSACTION: three round trips, the fewest
    /// the extended protocol allows (it carries one statement per message). The row and the stock change become
    /// visible at COMMIT PREPARED; until then the prepared transaction holds the product's row lock.
    func prepare(_ request: BranchRequest, coordinator: String?) async throws -> BranchResponse {
        guard xaEnabled else {
            throw ProtocolError(
                .xaUnavailable,
                "XA is not available at \(service): its PostgreSQL server has max_prepared_transactions = 0 (nothing was prepared); "
                    + "set it above 0 (e.g. 100), restart that server and then this participant (it reads the setting at start), or use TCC or Saga"
            )
        }
        let gid = self.gid(request)
        return try await client.withConnectionClosedOnCancel { connection in
            try await connection.query("BEGIN", logger: logger)
            do {
                let rows = try await connection.execute(
                    firstPhaseStatement(.xaPrepare, request, rowStatus: .confirmed, coordinator: coordinator, xaGID: gid), logger: logger
                )
                for try await _ in rows {}
                try await connection.query(PostgresQuery(unsafeSQL: "PREPARE TRANSACTION '\(gid)'"), logger: logger)
                return BranchResponse(workerEventId: request.workerEventId, productId: request.productId, operation: .xaPrepare, effect: .applied, status: nil)
            } catch {
                // After a failed statement the session is in an aborted transaction; after a failed PREPARE it may be in
                // none. ROLLBACK is right (or harmless) in both.
                // (not on a connection closed because the call was cancelled: its transaction ended with it, and a
                // statement written to a closed connection may never be answered)
                if !Task.isCancelled { _ = try? await connection.query("ROLLBACK", logger: logger).count() }
                switch error.sqlState {
                case "DX010":
                    return BranchResponse(workerEventId: request.workerEventId, productId: request.productId, operation: .xaPrepare, effect: .duplicate, status: nil)
                case "DX011":
                    return BranchResponse(workerEventId: request.workerEventId, productId: request.productId, operation: .xaPrepare, effect: .duplicate, status: .confirmed)
                case SQLState.objectNotInPrerequisiteState.rawValue:
                    throw ProtocolError(.xaUnavailable, "XA is not available at \(service): \(error.postgresMessage)")
                default:
                    throw error
                }
            }
        }
    }

    /// COMMIT PREPARED. "Does not exist" after an earlier commit is success.
    func commitPrepared(_ request: BranchRequest) async throws -> BranchResponse {
        do {
            _ = try await client.rows(PostgresQuery(unsafeSQL: "COMMIT PREPARED '\(gid(request))'"), logger: logger)
            return BranchResponse(workerEventId: request.workerEventId, productId: request.productId, operation: .xaCommit, effect: .applied, status: .confirmed)
        } catch where error.hasSQLState(.undefinedObject) {
            let rows = try await client.rows(
                "SELECT effect, refusal FROM dtx_xa_commit_missing(\(request.workerEventId), \(request.productId))", logger: logger
            )
            for row in rows {
                let (effect, refusal) = try row.decode((String, String?).self)
                if let refusal { throw refusalError(ProtocolError.Code(rawValue: refusal), .xaCommit, request, status: nil) }
                return try response(request, .xaCommit, effect: effect, status: RowStatus.confirmed.rawValue)
            }
            throw ProtocolError(.internalError, "dtx_xa_commit_missing returned no row")
        }
    }

    /// ROLLBACK PREPARED, then the barrier rows so that a late prepare does nothing: two round trips (ROLLBACK PREPARED
    /// cannot run inside a transaction, so not in the function).
    ///
    /// A prepare still in flight holds its uncommitted barrier row: the insert waits for it and gives up at
    /// `lock_timeout` with a 503; the retry then finds the transaction prepared and rolls it back.
    func rollbackPrepared(_ request: BranchRequest) async throws -> BranchResponse {
        var rolledBack = false
        do {
            _ = try await client.rows(PostgresQuery(unsafeSQL: "ROLLBACK PREPARED '\(gid(request))'"), logger: logger)
            rolledBack = true
        } catch where error.hasSQLState(.undefinedObject) {
            // not prepared (any more, or ever: also on a server without 2PC): go on to the barrier
        }
        let rows = try await client.rows(
            """
            SELECT effect, refusal FROM dtx_xa_rollback_barrier(\(request.workerEventId), \(request.productId), \(rolledBack), \
            \(lockTimeoutMilliseconds), \(request.notAfter.flatMap(Timestamp.parse)))
            """,
            logger: logger
        )
        for row in rows {
            let (effect, refusal) = try row.decode((String, String?).self)
            if let refusal { throw refusalError(ProtocolError.Code(rawValue: refusal), .xaRollback, request, status: "committed") }
            return try response(request, .xaRollback, effect: effect, status: nil)
        }
        throw ProtocolError(.internalError, "dtx_xa_rollback_barrier returned no row")
    }

    /// This service's prepared transactions older than `olderThan`, oldest first, as (worker_event_id, product_id).
    func inDoubt(olderThan: Duration) async throws -> [BranchRequest] {
        try await bounded { try await self.inDoubtNow(olderThan: olderThan) }
    }

    private func inDoubtNow(olderThan: Duration) async throws -> [BranchRequest] {
        let rows = try await client.rows(
            """
            SELECT gid FROM pg_prepared_xacts
            WHERE database = current_database() AND starts_with(gid, \(gidPrefix))
              AND prepared < now() - make_interval(secs => \(olderThan.inSeconds))
            ORDER BY prepared
            """,
            logger: logger
        )
        var found: [BranchRequest] = []
        for row in rows {
            let gid = try row.decode(String.self)
            let parts = gid.dropFirst(gidPrefix.count).split(separator: "-")
            guard parts.count == 2, let worker = Int64(parts[0]), let product = Int64(parts[1]) else { continue }
            // quantity is not needed to commit or roll back; 1 keeps the request valid
            found.append(BranchRequest(workerEventId: worker, productId: product, quantity: 1))
        }
        return found
    }
}
