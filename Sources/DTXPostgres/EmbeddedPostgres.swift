import Foundation
import Logging
import PostgresNIO

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A throwaway PostgreSQL cluster in a private folder, made with `initdb` and run with `pg_ctl`, so that the demo,
/// the benchmark and the tests need no server set up by hand.
///
/// Layout of `directory`: `data/` (PGDATA), `postgres.log`, `port` (the port it was last started on).
/// PostgreSQL refuses to run as root: when this process is root, the folder is given to the `postgres` user and
/// every server command runs through `runuser -u postgres --`.
/// Authentication is `trust` and the server listens on 127.0.0.1 only: a throwaway cluster for one machine.
public struct EmbeddedPostgres: Sendable {
    public struct Configuration: Sendable {
        /// The cluster's folder; made when missing, reused when it already holds a cluster.
        public var directory: String
        /// The TCP port; `nil` reuses the last one recorded in the folder, else picks a free one.
        public var port: Int?
        /// Must be > 0 for XA (`PREPARE TRANSACTION`).
        public var maxPreparedTransactions: Int = 200
        public var maxConnections: Int = 300
        /// `false` turns fsync and synchronous_commit off: faster, for tests only; a crash of the machine loses data.
        public var durable: Bool = true
        /// The databases made at start (kept if they exist).
        public var databases: [String] = EmbeddedPostgres.serviceDatabases
        /// Load pg_stat_statements (counts of statements per database, for the benchmark's cost table and tests).
        public var statementStatistics = false
        /// More `name = value` lines for postgresql.conf, written last (so they win).
        public var extraSettings: [String] = []
        /// Environment variables for the server's processes (tests use it for libfaketime's `LD_PRELOAD` and `FAKETIME`:
        /// a server whose clock differs from the services').
        public var serverEnvironment: [String: String] = [:]

        public init(directory: String, port: Int? = nil) {
            self.directory = directory
            self.port = port
        }
    }

    /// The databases of the default layout: one per participant, one for the coordinator.
    public static let serviceDatabases = ["dtx_service_a", "dtx_service_b", "dtx_coordinator"]
    /// The superuser made by `initdb`.
    public static let superuser = "postgres"

    public var configuration: Configuration
    public let binaries: PostgresBinaries
    private var directory: String { configuration.directory }
    private var dataDirectory: String { configuration.directory + "/data" }
    private var logFile: String { configuration.directory + "/postgres.log" }
    private var portFile: String { configuration.directory + "/port" }

    public init(configuration: Configuration) throws {
        self.configuration = configuration
        self.configuration.directory = URL(fileURLWithPath: configuration.directory).standardizedFileURL.path
        self.binaries = try PostgresBinaries.locate()
    }

    /// The URL of `database` on this cluster (once started).
    public func url(database: String) throws -> DatabaseURL {
        guard let port = self.recordedPort() else { throw EmbeddedPostgresError("no cluster has been started in \(directory)") }
        return DatabaseURL(endpoint: .tcp(host: "127.0.0.1", port: port), username: Self.superuser, database: database)
    }

    /// Makes the cluster if needed, starts it (or finds it running), makes the databases, and returns the URL of
    /// the `postgres` database.
    @discardableResult
    public func start(logger: Logger) async throws -> DatabaseURL {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let runAsPostgres = geteuid() == 0
        if runAsPostgres {
            try Command.run(["chown", "-R", "\(Self.superuser):\(Self.superuser)", directory])
            let (status, _) = try Command.status(["runuser", "-u", Self.superuser, "--", "test", "-w", directory])
            guard status == 0 else {
                throw EmbeddedPostgresError(
                    "the postgres user cannot write to \(directory) (a parent folder is closed to it): use a folder under /tmp, e.g. --dir /tmp/dtx-postgres"
                )
            }
        }
        if !FileManager.default.fileExists(atPath: dataDirectory + "/PG_VERSION") {
            logger.info("initdb", metadata: ["dtx.pgdata": "\(dataDirectory)"])
            try self.serverCommand([
                binaries.initdb, "-D", dataDirectory, "-U", Self.superuser, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync",
            ])
            let conf = dataDirectory + "/postgresql.conf"
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: conf))
            try handle.seekToEnd()
            try handle.write(contentsOf: Data("\n# dtx settings, rewritten at every start\ninclude 'dtx.conf'\n".utf8))
            try handle.close()
        }

        if self.isRunning() {
            logger.info("cluster already running", metadata: ["dtx.pgdata": "\(dataDirectory)"])
        } else {
            let port = try configuration.port ?? self.recordedPort() ?? Self.freePort()
            try self.writeSettings(port: port, runAsPostgres: runAsPostgres)
            try String(port).write(toFile: portFile, atomically: true, encoding: .utf8)
            do {
                let environment = configuration.serverEnvironment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
                try self.serverCommand(
                    (environment.isEmpty ? [] : ["env"] + environment) + [binaries.pgCtl, "-D", dataDirectory, "-l", logFile, "-w", "-t", "60", "start"]
                )
            } catch {
                let log = (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? ""
                let tail = log.split(separator: "\n").suffix(5).joined(separator: "\n")
                throw EmbeddedPostgresError("PostgreSQL did not start (log: \(logFile)):\n\(tail)")
            }
        }
        let admin = try self.url(database: "postgres")
        try await admin.withConnection(logger: logger) { connection in
            for database in configuration.databases {
                try await Self.createDatabase(database, on: connection, logger: logger)
            }
        }
        return admin
    }

    /// Creates `name` unless it exists. `name` must be a plain identifier (letters, digits, `_`).
    public static func createDatabase(_ name: String, on connection: PostgresConnection, logger: Logger) async throws {
        guard name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }) else {
            throw EmbeddedPostgresError("database name '\(name)' must be letters, digits and _ only")
        }
        do {
            try await connection.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"), logger: logger)
        } catch where error.hasSQLState(.duplicateDatabase) {
            // already there: reuse it
        }
    }

    /// Stops the server: a fast shutdown, or with `immediately` an immediate one (`pg_ctl stop -m immediate`: the
    /// server processes end at once, what was only in shared memory is lost and the next start recovers from the WAL,
    /// as after a crash). Does nothing when it is not running.
    public func stop(immediately: Bool = false) throws {
        guard self.isRunning() else { return }
        try self.serverCommand([binaries.pgCtl, "-D", dataDirectory, "-m", immediately ? "immediate" : "fast", "-w", "-t", "60", "stop"])
    }

    /// Stops the server and deletes the folder.
    public func destroy() throws {
        _ = try? self.serverCommand([binaries.pgCtl, "-D", dataDirectory, "-m", "immediate", "-w", "stop"])
        try FileManager.default.removeItem(atPath: directory)
    }

    public func isRunning() -> Bool {
        guard FileManager.default.fileExists(atPath: dataDirectory + "/PG_VERSION") else { return false }
        let status = try? self.serverCommandStatus([binaries.pgCtl, "-D", dataDirectory, "status"])
        return status == 0
    }

    /// A one-line state for `dtx postgres status`.
    public func statusLine() -> String {
        guard FileManager.default.fileExists(atPath: dataDirectory + "/PG_VERSION") else { return "no cluster in \(directory)" }
        let port = recordedPort().map(String.init) ?? "?"
        return isRunning() ? "running in \(directory) on 127.0.0.1:\(port)" : "stopped (cluster in \(directory), last port \(port))"
    }

    /// Stops the server and removes the folder once process `pid` has exited, however it exits (a crash or
    /// SIGKILL included): a detached watchdog shell that ignores the terminal's signals does it.
    public func removeWhenProcessExits(pid: Int32 = getpid()) throws {
        let stop = (geteuid() == 0 ? "runuser -u \(Self.superuser) -- " : "") + "'\(binaries.pgCtl)' -D '\(dataDirectory)' -m immediate -w stop"
        let script = """
            trap '' INT TERM HUP
            while kill -0 \(pid) 2>/dev/null; do sleep 0.5; done
            \(stop) >/dev/null 2>&1
            rm -rf '\(directory)'
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", script]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    private func recordedPort() -> Int? {
        (try? String(contentsOfFile: portFile, encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    private func writeSettings(port: Int, runAsPostgres: Bool) throws {
        var lines = [
            "port = \(port)",
            "listen_addresses = '127.0.0.1'",
            "unix_socket_directories = ''",
            "max_connections = \(configuration.maxConnections)",
            "max_prepared_transactions = \(configuration.maxPreparedTransactions)",
            "shared_buffers = 256MB",
            "logging_collector = off",
            "log_min_messages = warning",
        ]
        if !configuration.durable {
            lines += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        }
        if configuration.statementStatistics {
            lines += ["shared_preload_libraries = 'pg_stat_statements'", "pg_stat_statements.track = 'all'", "pg_stat_statements.max = 10000"]
        }
        lines += configuration.extraSettings
        let path = dataDirectory + "/dtx.conf"
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: false, encoding: .utf8)
        if runAsPostgres { try Command.run(["chown", "-R", "\(Self.superuser):\(Self.superuser)", directory]) }
    }

    @discardableResult
    private func serverCommand(_ arguments: [String]) throws -> String {
        try Command.run(geteuid() == 0 ? ["runuser", "-u", Self.superuser, "--"] + arguments : arguments)
    }

    private func serverCommandStatus(_ arguments: [String]) throws -> Int32 {
        try Command.status(geteuid() == 0 ? ["runuser", "-u", Self.superuser, "--"] + arguments : arguments).0
    }

    /// A TCP port on 127.0.0.1 that nothing listens on right now.
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw EmbeddedPostgresError("socket() failed: errno \(errno)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw EmbeddedPostgresError("bind() failed: errno \(errno)") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw EmbeddedPostgresError("getsockname() failed: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// Where the PostgreSQL server programs are.
public struct PostgresBinaries: Sendable {
    public var initdb: String
    public var pgCtl: String

    /// Looks on PATH, then in `pg_config --bindir`, then under /usr/lib/postgresql/*/bin (newest first).
    public static func locate() throws -> PostgresBinaries {
        var folders: [String] = []
        if let initdb = Command.which("initdb") { folders.append(URL(fileURLWithPath: initdb).deletingLastPathComponent().path) }
        if Command.which("pg_config") != nil, let bindir = try? Command.run(["pg_config", "--bindir"]) {
            folders.append(bindir.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        let debianRoot = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: debianRoot)) ?? [])
            .sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }
        folders += versions.map { "\(debianRoot)/\($0)/bin" }
        for folder in folders {
            let initdb = folder + "/initdb"
            let pgCtl = folder + "/pg_ctl"
            if FileManager.default.isExecutableFile(atPath: initdb) && FileManager.default.isExecutableFile(atPath: pgCtl) {
                return PostgresBinaries(initdb: initdb, pgCtl: pgCtl)
            }
        }
        throw EmbeddedPostgresError(
            """
            the PostgreSQL server programs (initdb, pg_ctl) were not found on PATH, via pg_config or under /usr/lib/postgresql: \
            install them (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql@15), \
            or pass --database-url to use a server you already have
            """
        )
    }
}

public struct EmbeddedPostgresError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
