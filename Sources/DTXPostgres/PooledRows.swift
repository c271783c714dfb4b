import Logging
import PostgresNIO

extension PostgresClient {
    /// `withConnection`, except that a caller cancelled while it holds the connection (its `withDeadline` passed, or the
    /// service is stopping) closes that connection. A statement waiting for its answer does not end on cancellation,
    /// and the pool takes back a leased connection only when the statement ends or the connection closes: with a server
    /// that went silent (a network that drops packets, a failover that sends no reset; PostgresNIO sets no TCP
    /// keepalive) neither happens, and every call that timed out kept its connection until the whole pool was held and
    /// the service answered 503 for good (seen with the backends stopped by SIGSTOP). Closed, the connection is replaced.
    /// Closing aborts an open transaction (an XA prepare's, before its PREPARE TRANSACTION); a statement the server
    /// already has finishes or rolls back there, as with any lost client.
    ///
    /// A cancelled call waits for the close to complete before it gives the connection back: NIO marks a closing channel
    /// inactive (which fails the statement) a loop turn before it completes `closeFuture`, where the pool learns of the
    /// close, and a connection given back in between would go to the next waiting request, closed.
    public func withConnectionClosedOnCancel<Result: Sendable>(_ body: (PostgresConnection) async throws -> Result) async throws -> Result {
        try await withConnection { connection in
            let result: Result
            do {
                result = try await withTaskCancellationHandler {
                    try await body(connection)
                } onCancel: {
                    connection.close().whenComplete { _ in }
                }
            } catch {
                if Task.isCancelled { await Self.closed(connection) }
                throw error
            }
            if Task.isCancelled { await Self.closed(connection) }
            return result
        }
    }

    /// Closes `connection` (again, if the cancellation handler already did: harmless) and waits until it is closed.
    private static func closed(_ connection: PostgresConnection) async {
        connection.close().whenComplete { _ in }
        try? await connection.closeFuture.get()
    }

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
        try await withConnectionClosedOnCancel { connection in
            var rows: [PostgresRow] = []
            for try await row in try await connection.query(query, logger: logger) { rows.append(row) }
            return rows
        }
    }

    /// Every row of a prepared statement, read to its end on a connection leased for exactly that long (see above).
    public func rows<Statement: PostgresPreparedStatement>(_ statement: Statement, logger: Logger) async throws -> [Statement.Row]
    where Statement.Row: Sendable {
        try await withConnectionClosedOnCancel { connection in
            var rows: [Statement.Row] = []
            for try await row in try await connection.execute(statement, logger: logger) { rows.append(row) }
            return rows
        }
    }
}
