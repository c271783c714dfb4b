import Foundation
import Logging

/// Three throwaway PostgreSQL servers, one per part, as a deployment has them: the coordinator's, ServiceA's and
/// ServiceB's, each its own cluster in a subfolder of `directory` (`coordinator/`, `service_a/`, `service_b/`), each
/// with its one database. XA's gids then live on different servers, as in production.
public struct ServerTrio: Sendable {
    public enum Part: String, CaseIterable, Sendable {
        case coordinator, serviceA = "service_a", serviceB = "service_b"

        /// The database the part uses on its server.
        public var database: String { "dtx_" + rawValue }
    }

    public let directory: String
    public let clusters: [Part: EmbeddedPostgres]

    /// `configure` adjusts each cluster's settings (durability, statement statistics, ...).
    public init(directory: String, configure: (inout EmbeddedPostgres.Configuration) -> Void = { _ in }) throws {
        self.directory = directory
        var clusters: [Part: EmbeddedPostgres] = [:]
        for part in Part.allCases {
            var configuration = EmbeddedPostgres.Configuration(directory: "\(directory)/\(part.rawValue)")
            configuration.databases = [part.database]
            configure(&configuration)
            clusters[part] = try EmbeddedPostgres(configuration: configuration)
        }
        self.clusters = clusters
    }

    /// Whether `directory` holds a trio's servers (made by `dtx postgres start --servers 3`), so that the commands
    /// given the folder alone find all three.
    public static func holdsServers(in directory: String) -> Bool {
        Part.allCases.contains { FileManager.default.fileExists(atPath: "\(directory)/\($0.rawValue)/data/PG_VERSION") }
    }

    /// Starts the three (each made on first use).
    public func start(logger: Logger) async throws {
        for part in Part.allCases { try await clusters[part]!.start(logger: logger) }
    }

    public func url(_ part: Part) throws -> DatabaseURL { try clusters[part]!.url(database: part.database) }

    public var urls: (a: DatabaseURL, b: DatabaseURL, coordinator: DatabaseURL) {
        get throws { (try url(.serviceA), try url(.serviceB), try url(.coordinator)) }
    }

    public func stop() throws {
        for cluster in clusters.values { try cluster.stop() }
    }

    /// Stops the three servers and deletes the folder.
    public func destroy() throws {
        for cluster in clusters.values { try? cluster.destroy() }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Stops and removes all three when process `pid` exits, however it exits.
    public func removeWhenProcessExits(pid: Int32 = getpid()) throws {
        for cluster in clusters.values { try cluster.removeWhenProcessExits(pid: pid) }
    }

    /// A line per server for people: which part, where, which port.
    public func statusLines() -> [String] {
        Part.allCases.map { "\($0.rawValue): \(clusters[$0]!.statusLine())" }
    }
}
