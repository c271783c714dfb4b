import DTXPostgres
import Foundation

/// A PostgreSQL cluster of one test's own, for tests that stop, crash or reconfigure the server (the shared one stays
/// up for everybody else). Removed when the test process ends, however it ends.
struct PrivateCluster: Sendable {
    let cluster: EmbeddedPostgres

    /// `crashable`: commits wait for the WAL write (synchronous_commit on; fsync off is enough against a server crash,
    /// which the kernel outlives), and writes that do not wait stay in the server's memory for up to 10 s, so that an
    /// immediate stop loses them as a crash would.
    static func start(_ label: String, databases: [String], crashable: Bool = false, configure: (inout EmbeddedPostgres.Configuration) -> Void = { _ in }) async throws -> PrivateCluster {
        var configuration = EmbeddedPostgres.Configuration(directory: "/tmp/dtx-test-\(getpid())-\(label)")
        configuration.durable = false
        configuration.databases = databases
        configuration.maxConnections = 200
        if crashable {
            configuration.extraSettings = ["synchronous_commit = on", "wal_writer_delay = 10000ms", "wal_writer_flush_after = 0"]
        }
        configure(&configuration)
        let cluster = try EmbeddedPostgres(configuration: configuration)
        try cluster.removeWhenProcessExits()
        try await cluster.start(logger: TestPostgres.logger)
        return PrivateCluster(cluster: cluster)
    }

    func url(_ database: String) throws -> DatabaseURL { try cluster.url(database: database) }

    /// `pg_ctl stop -m immediate`: the server ends at once, as in a crash.
    func crash() throws { try cluster.stop(immediately: true) }

    /// Starts it again on the same port; it recovers from its WAL.
    func restart() async throws { try await cluster.start(logger: TestPostgres.logger) }

    func destroy() { try? cluster.destroy() }
}
