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

    /// Bounded (see `withDeadline`): a lost call would otherwise keep the lock from ever being taken again.
    static func lock(_ connection: PostgresConnection, holder: Int64, logger: Logger) async throws {
        try await withDeadline(.seconds(10)) {
            _ = try await connection.query("SELECT pg_advisory_lock(dtx_holder_lock_namespace(), \(Int32(truncatingIfNeeded: holder)))", logger: logger)
        }
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
                do {
                    let new = try await PostgresConnection.connect(configuration: try url.connectionConfiguration(), id: 1, logger: logger)
                    try await Self.lock(new, holder: holder, logger: logger)
                    connection = new
                } catch {
                    logger.warning("cannot take this coordinator's liveness lock yet", metadata: ["dtx.error": "\(error)"])
                    try? await Task.sleep(for: .seconds(1))
                }
            }
        }
    }
}
