import PostgresNIO

/// The SQLSTATE codes dtx acts on.
public enum SQLState: String, Sendable {
    case uniqueViolation = "23505"
    case checkViolation = "23514"
    case foreignKeyViolation = "23503"
    case serializationFailure = "40001"
    case deadlockDetected = "40P01"
    case lockNotAvailable = "55P03"
    case objectNotInPrerequisiteState = "55000"
    case undefinedObject = "42704"
    case duplicateDatabase = "42P04"
    case activeSQLTransaction = "25001"
    case queryCanceled = "57014"
}

extension Error {
    /// The SQLSTATE of this error, looking through `PostgresTransactionError` wrappers.
    public var sqlState: String? {
        if let error = self as? PSQLError { return error.serverInfo?[.sqlState] }
        return wrapped?.sqlState
    }

    /// The error a `PostgresTransactionError` wraps (the closure's, the commit's or the begin's).
    private var wrapped: (any Error)? {
        guard let error = self as? PostgresTransactionError else { return nil }
        return error.closureError ?? error.commitError ?? error.beginError
    }

    public func hasSQLState(_ state: SQLState) -> Bool { self.sqlState == state.rawValue }

    /// Whether this is the database failing (its server, the connection to it, or a call past its deadline) rather than
    /// this program: an HTTP route answers it 503 (retry), not 500.
    public var isDatabaseFailure: Bool {
        if self is DeadlineExceeded || self is DatabaseUnreachable { return true }
        if let wrapped { return wrapped.isDatabaseFailure }
        guard let error = self as? PSQLError else { return false }
        // no SQLSTATE: the connection failed, not a statement; else the classes a retry can get past (connection,
        // serialization or deadlock, resources, lock not available, shutdown, system error)
        guard let state = error.serverInfo?[.sqlState] else { return true }
        return ["08", "40", "53", "55", "57", "58"].contains(String(state.prefix(2)))
    }

    /// The server's message for a PostgreSQL error, else a plain description.
    public var postgresMessage: String {
        if let error = self as? PSQLError {
            if let message = error.serverInfo?[.message] { return message }
            return "\(error.code)"
        }
        return "\(self)"
    }

    /// For log lines: the server's message with its SQLSTATE, or the client-side failure with its cause. PSQLError's
    /// own description is a fixed text ("Generic description to prevent accidental leakage of sensitive data"), which
    /// told an operator nothing: a missing permission, too many connections and a failed login all read the same.
    public var logDescription: String {
        guard let error = self as? PSQLError else { return "\(self)" }
        if let message = error.serverInfo?[.message] {
            return message + (error.serverInfo?[.sqlState].map { " (SQLSTATE \($0))" } ?? "")
        }
        return "\(error.code)" + (error.underlying.map { ": \($0)" } ?? "")
    }
}

extension PostgresConnection {
    /// Runs `body` between BEGIN and COMMIT on this connection and rolls back on every error path.
    ///
    /// Unlike `withTransaction`, errors are rethrown as they are (not wrapped), so that a business error thrown
    /// from `body` reaches the caller unchanged.
    public func transaction<Result: Sendable>(
        logger: Logger,
        isolation: isolated (any Actor)? = #isolation,
        _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        try await self.query("BEGIN", logger: logger)
        let result: Result
        do {
            result = try await body(self)
        } catch {
            _ = try? await self.query("ROLLBACK", logger: logger)
            throw error
        }
        do {
            try await self.query("COMMIT", logger: logger)
        } catch {
            _ = try? await self.query("ROLLBACK", logger: logger)
            throw error
        }
        return result
    }
}

extension PostgresClient {
    /// One local transaction on a pooled connection; errors come back unwrapped.
    public func transaction<Result: Sendable>(
        logger: Logger,
        isolation: isolated (any Actor)? = #isolation,
        _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        try await self.withConnection { connection in
            try await connection.transaction(logger: logger, body)
        }
    }
}

extension PostgresRowSequence {
    /// Drains the sequence and counts its rows (for `... RETURNING` statements).
    public func count() async throws -> Int {
        var count = 0
        for try await _ in self { count += 1 }
        return count
    }
}
