import DTXPostgres
import Foundation
import Logging
import PostgresNIO

/// One throwaway cluster per test run, a fresh database per test.
///
/// The cluster is made on first use in /tmp and removed when the test process exits, whichever way it exits:
/// `EmbeddedPostgres.removeWhenProcessExits` leaves a watchdog behind that stops and deletes it.
actor TestPostgres {
    static let shared = TestPostgres()

    private var cluster: Task<EmbeddedPostgres, any Error>?
    private var counter = 0

    static var logger: Logger {
        var logger = Logger(label: "dtx.test")
        logger.logLevel = ProcessInfo.processInfo.environment["DTX_TEST_LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0) } ?? .critical
        return logger
    }

    /// The cluster, started by the first caller; the others wait for that start (no second initdb).
    private func started() async throws -> EmbeddedPostgres {
        if let cluster { return try await cluster.value }
        let task = Task { try await Self.startCluster() }
        cluster = task
        return try await task.value
    }

    private static func startCluster() async throws -> EmbeddedPostgres {
        let directory = "/tmp/dtx-test-\(getpid())"
        var configuration = EmbeddedPostgres.Configuration(directory: directory)
        configuration.durable = false
        configuration.databases = []
        configuration.maxConnections = 500
        let cluster = try EmbeddedPostgres(configuration: configuration)
        try cluster.removeWhenProcessExits()
        try await cluster.start(logger: Self.logger)
        return cluster
    }

    /// A new empty database on the shared cluster.
    func newDatabase(_ label: String = "t") async throws -> DatabaseURL {
        let cluster = try await started()
        counter += 1
        let name = "\(label)_\(counter)"
        let admin = try cluster.url(database: "postgres")
        try await admin.withConnection(logger: Self.logger) { connection in
            try await EmbeddedPostgres.createDatabase(name, on: connection, logger: Self.logger)
        }
        return try cluster.url(database: name)
    }

    /// A URL of the shared cluster's admin database.
    func adminURL() async throws -> DatabaseURL {
        try await started().url(database: "postgres")
    }
}

/// Runs `body` with a plain connection to `url`.
func withDatabase<T: Sendable>(_ url: DatabaseURL, _ body: (PostgresConnection) async throws -> T) async throws -> T {
    try await url.withConnection(logger: TestPostgres.logger, body)
}

/// A single integer from a query (`SELECT count(*) ...`).
func scalar(_ url: DatabaseURL, _ query: PostgresQuery) async throws -> Int64 {
    try await withDatabase(url) { connection in
        for try await value in try await connection.query(query, logger: TestPostgres.logger).decode(Int64.self) {
            return value
        }
        return 0
    }
}

/// A single text value from a query, nil for no row.
func textValue(_ url: DatabaseURL, _ query: PostgresQuery) async throws -> String? {
    try await withDatabase(url) { connection in
        for try await value in try await connection.query(query, logger: TestPostgres.logger).decode(String.self) {
            return value
        }
        return nil
    }
}

/// Waits until `condition` holds, checking every 50 ms, failing after `timeout`.
func eventually(
    _ what: String, timeout: Duration = .seconds(30), _ condition: @Sendable () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if (try? await condition()) == true { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    struct Timeout: Error, CustomStringConvertible { var description: String }
    throw Timeout(description: "timed out after \(timeout) waiting for: \(what)")
}
