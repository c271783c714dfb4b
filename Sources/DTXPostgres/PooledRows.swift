import Logging
import PostgresNIO

extension PostgresClient {
    /// Every row of `query`, read to its end on a connection leased for exactly that long.
    ///
    /// The services use this instead of `PostgresClient.query` and `execute`, whose lease is given back when the
    /// row stream finishes: in PostgresNIO 1.33 a statement that fails after its rows began (a refusal raised by a
    /// branch function, COMMIT PREPARED of a gid that is gone) can fail the stream before the caller starts reading
    /// it, and that path (`PSQLRowStream.asyncSequence`, state `.failure`) never calls the stream's `onFinish`: the
    /// connection stays leased for ever. At 20 % refusals a participant's pool of 40 connections was all leaked within
    /// a few minutes and every later operation waited for a connection (seen in the exhaustion scenario). Here the lease
    /// ends with `withConnection`, whatever the stream does.
    public func rows(_ query: PostgresQuery, logger: Logger) async throws -> [PostgresRow] {
        try await withConnection { connection in
            var rows: [PostgresRow] = []
            for try await row in try await connection.query(query, logger: logger) { rows.append(row) }
            return rows
        }
    }

    /// Every row of a prepared statement, read to its end on a connection leased for exactly that long (see above).
    public func rows<Statement: PostgresPreparedStatement>(_ statement: Statement, logger: Logger) async throws -> [Statement.Row]
    where Statement.Row: Sendable {
        try await withConnection { connection in
            var rows: [Statement.Row] = []
            for try await row in try await connection.execute(statement, logger: logger) { rows.append(row) }
            return rows
        }
    }
}
