import DTXPostgres
import Logging
import NIOCore
import PostgresNIO
import ServiceLifecycle

/// This coordinator process's mark of life in the log's database: a session advisory lock on its holder number, held
/// on a connection of its own for as long as the process runs.
///
/// Rows this process holds carry its holder number. Another coordinator may claim such a row once its lease has run
/// out, or at once when nobody holds the lock any more (the process died, and PostgreSQL released the lock when its
/// connection closed), so a coordinator killed and restarted resumes its work without waiting for its leases to end,
/// and start-up never releases leases by name. Safety does not rest on this (the lease epoch fences every write);
/// only how soon work is taken over does.
public struct HolderLock: Service {
    public let holder: Int64
    let url: DatabaseURL
    let logger: Logger
    /// The connection that holds the lock, from `acquire`; the service keeps it and takes it again if it is lost.
    let first: PostgresConnection

    /// Takes a new holder number and its lock, before the coordinator writes anything.
    static func acquire(_ url: DatabaseURL, logger: Logger) async throws -> HolderLock {
        let connection = try await PostgresConnection.connect(configuration: try url.connectionConfiguration(), id: 1, logger: logger)
        do {
            var holder: Int64 = 0
            for try await value in try await connection.query("SELECT nextval('coordinator_holders')", logger: logger).decode(Int64.self) {
                holder = value
            }
            try await lock(connection, holder: holder, logger: logger)
            return HolderLock(holder: holder, url: url, logger: logger, first: connection)
        } catch {
            try? await connection.close()
            throw error
        }
    }

    /// Takes the lock without waiting: when the server still keeps an earlier session of this process that holds it
    /// (a connection lost on the way, which the server has not seen close yet), this fails and the caller tries again
    /// later, rather than leaving a session blocked in the server that would take the lock whenever the old one goes.
    /// Bounded (see `withDeadline`): a lost call would otherwise keep the lock from ever being taken again.
    static func lock(_ connection: PostgresConnection, holder: Int64, logger: Logger) async throws {
        let taken = try await withDeadline(.seconds(10)) {
            let rows = try await connection.query(
                "SELECT pg_try_advisory_lock(dtx_holder_lock_namespace(), \(Int32(truncatingIfNeeded: holder)))", logger: logger
            )
            for try await taken in rows.decode(Bool.self) { return taken }
            return false
        }
        guard taken else { throw LockHeldElsewhere(holder: holder) }
    }

    struct LockHeldElsewhere: Error, CustomStringConvertible {
        var holder: Int64
        var description: String { "the liveness lock of holder \(holder) is still held by an earlier session the server has not seen close" }
    }

    public func run() async throws {
        let (first, holder, url, logger) = (self.first, self.holder, self.url, self.logger)
        await cancelWhenGracefulShutdown {
            var connection: PostgresConnection? = first
            while !Task.isCancelled {
                if let held = connection {
                    // wait until the connection closes (the database restarted, the network failed), or shutdown
                    await withTaskCancellationHandler {
                        _ = try? await held.closeFuture.get()
                    } onCancel: {
                        let closing: EventLoopFuture<Void> = held.close()
                        _ = closing
                    }
                    connection = nil
                    if Task.isCancelled { return }
                    logger.warning("the connection holding this coordinator's liveness lock closed: taking it again")
                }
                var new: PostgresConnection?
                do {
                    new = try await PostgresConnection.connect(configuration: try url.connectionConfiguration(), id: 1, logger: logger)
                    try await Self.lock(new!, holder: holder, logger: logger)
                    connection = new
                } catch {
                    // a connection that did not get the lock is closed, not left open in the server
                    if let new { try? await new.close() }
                    logger.warning("cannot take this coordinator's liveness lock yet", metadata: ["dtx.error": "\(error.logDescription)"])
                    try? await Task.sleep(for: .seconds(1))
                }
            }
            // stopped with the lock held (cancelled before the first wait, or just after taking it again): let it go, so
            // that other coordinators see this one gone at once rather than after the lease
            if let connection { try? await connection.close() }
        }
    }

    /// Lets the lock go without running (the coordinator failed to build after taking it).
    func release() async {
        try? await first.close()
    }
}
