import Foundation
import Logging
import NIOSSL
import PostgresNIO

/// A PostgreSQL connection URL, parsed.
///
/// Accepted forms (the libpq forms most users already have):
/// - `postgres://user:password@host:port/database` (`postgresql://` too; port defaults to 5432)
/// - `postgres://user@/database?host=/var/run/postgresql` (a unix socket in that folder; `port` picks the
///   socket file `.s.PGSQL.<port>`)
/// - `?sslmode=disable|prefer|require` (default `disable`)
public struct DatabaseURL: Sendable, Hashable, CustomStringConvertible {
    public enum Endpoint: Sendable, Hashable {
        case tcp(host: String, port: Int)
        case unixSocket(path: String)
    }

    public enum SSLMode: String, Sendable, Hashable {
        case disable, prefer, require
    }

    public var endpoint: Endpoint
    public var username: String
    public var password: String?
    public var database: String
    public var sslMode: SSLMode

    public init(endpoint: Endpoint, username: String, password: String? = nil, database: String, sslMode: SSLMode = .disable) {
        self.endpoint = endpoint
        self.username = username
        self.password = password
        self.database = database
        self.sslMode = sslMode
    }

    /// Parses `string`; the error says what is wrong with it in one line.
    public init(_ string: String) throws(DatabaseURLError) {
        let fail = { (reason: String) in DatabaseURLError(url: string, reason: reason) }
        var rest = Substring(string.trimmingCharacters(in: .whitespaces))
        guard let schemeEnd = rest.range(of: "://") else {
            throw fail("it must start with postgres:// (for example postgres://user:password@127.0.0.1:5432/dtx_service_a)")
        }
        let scheme = rest[..<schemeEnd.lowerBound].lowercased()
        guard scheme == "postgres" || scheme == "postgresql" else {
            throw fail("unknown scheme '\(scheme)': use postgres://")
        }
        rest = rest[schemeEnd.upperBound...]

        var query: [String: String] = [:]
        if let q = rest.firstIndex(of: "?") {
            for pair in rest[rest.index(after: q)...].split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                guard parts.count == 2, let key = parts[0].removingPercentEncoding, let value = parts[1].removingPercentEncoding else {
                    throw fail("query parameter '\(pair)' is not name=value")
                }
                query[key] = value
            }
            rest = rest[..<q]
        }

        var path = ""
        if let slash = rest.firstIndex(of: "/") {
            path = String(rest[rest.index(after: slash)...])
            rest = rest[..<slash]
        }

        var user = "postgres"
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            let parts = userInfo.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            guard let decodedUser = parts[0].removingPercentEncoding, !decodedUser.isEmpty else {
                throw fail("the user name is empty or badly percent-encoded")
            }
            user = decodedUser
            if parts.count == 2 {
                guard let decoded = parts[1].removingPercentEncoding else { throw fail("the password is badly percent-encoded") }
                password = decoded
            }
        }
        if let queryUser = query["user"] { user = queryUser }
        if let queryPassword = query["password"] { password = queryPassword }

        var host = ""
        var port = 5432
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw fail("unterminated IPv6 address") }
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            rest = rest[rest.index(after: close)...]
            if rest.hasPrefix(":") { rest = rest.dropFirst() } else if !rest.isEmpty { throw fail("unexpected text after the IPv6 address") }
            if !rest.isEmpty { port = try Self.parsePort(rest, fail) }
        } else if let colon = rest.lastIndex(of: ":") {
            host = String(rest[..<colon])
            port = try Self.parsePort(rest[rest.index(after: colon)...], fail)
        } else {
            host = String(rest)
        }
        if let queryPort = query["port"] { port = try Self.parsePort(Substring(queryPort), fail) }

        guard let database = path.removingPercentEncoding, !database.isEmpty else {
            throw fail("the database name is missing: add /DATABASE after the host")
        }
        guard !database.contains("/") else { throw fail("the database name '\(database)' contains '/'") }

        let socketFolder = query["host"].flatMap { $0.hasPrefix("/") ? $0 : nil } ?? (host.hasPrefix("/") ? host : nil)
        if let socketFolder {
            self.endpoint = .unixSocket(path: "\(socketFolder)/.s.PGSQL.\(port)")
        } else {
            if let queryHost = query["host"] { host = queryHost }
            guard !host.isEmpty else {
                throw fail("the host is missing: give host:port, or ?host=/socket/folder for a unix socket")
            }
            self.endpoint = .tcp(host: host, port: port)
        }
        if let mode = query["sslmode"] {
            guard let sslMode = SSLMode(rawValue: mode) else {
                throw fail("sslmode '\(mode)' is not supported: use disable, prefer or require")
            }
            self.sslMode = sslMode
        } else {
            self.sslMode = .disable
        }
        self.username = user
        self.password = password
        self.database = database
    }

    private static func parsePort(_ text: Substring, _ fail: (String) -> DatabaseURLError) throws(DatabaseURLError) -> Int {
        guard let port = Int(text), (1...65535).contains(port) else { throw fail("port '\(text)' is not a number from 1 to 65535") }
        return port
    }

    /// The same server and credentials, another database.
    public func with(database: String) -> DatabaseURL {
        var copy = self
        copy.database = database
        return copy
    }

    /// The URL as text, with the password masked, for logs and messages.
    public var description: String { self.render(maskPassword: true) }

    /// The URL as text, password included, for handing to another process.
    public var urlString: String { self.render(maskPassword: false) }

    private func render(maskPassword: Bool) -> String {
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-._~"))
        let user = self.username.addingPercentEncoding(withAllowedCharacters: allowed) ?? self.username
        var credentials = user
        if let password {
            credentials += ":" + (maskPassword ? "***" : (password.addingPercentEncoding(withAllowedCharacters: allowed) ?? password))
        }
        let database = self.database.addingPercentEncoding(withAllowedCharacters: allowed) ?? self.database
        var query: [String] = []
        let location: String
        switch self.endpoint {
        case .tcp(let host, let port):
            location = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unixSocket(let path):
            let url = URL(fileURLWithPath: path)
            let port = url.lastPathComponent.split(separator: ".").last.map(String.init) ?? "5432"
            location = ""
            query.append("host=\(url.deletingLastPathComponent().path)")
            query.append("port=\(port)")
        }
        if self.sslMode != .disable { query.append("sslmode=\(self.sslMode.rawValue)") }
        return "postgres://\(credentials)@\(location)/\(database)" + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
    }

    /// Settings for a `PostgresClient`.
    /// `statementTimeout`: the server cancels (and rolls back) a statement still running after it, so that a statement
    /// the caller gave up on cannot commit later behind its back (0 or none: no limit).
    public func clientConfiguration(maximumConnections: Int = 20, statementTimeout: Duration? = nil) throws -> PostgresClient.Configuration {
        var configuration: PostgresClient.Configuration
        switch self.endpoint {
        case .tcp(let host, let port):
            let tls: PostgresClient.Configuration.TLS
            switch self.sslMode {
            case .disable: tls = .disable
            case .prefer: tls = .prefer(.makeClientConfiguration())
            case .require: tls = .require(.makeClientConfiguration())
            }
            configuration = .init(host: host, port: port, username: self.username, password: self.password, database: self.database, tls: tls)
        case .unixSocket(let path):
            configuration = .init(unixSocketPath: path, username: self.username, password: self.password, database: self.database)
        }
        configuration.options.maximumConnections = maximumConnections
        configuration.options.connectTimeout = .seconds(5)
        configuration.options.additionalStartupParameters = Self.sessionSettings
        if let statementTimeout, statementTimeout > .zero {
            let milliseconds = max(1, statementTimeout.components.seconds * 1000 + statementTimeout.components.attoseconds / 1_000_000_000_000_000)
            configuration.options.additionalStartupParameters.append(("statement_timeout", "\(milliseconds)ms"))
        }
        return configuration
    }
}

/// A connection URL that could not be used; `description` is a one-line message for the user. The URL is kept with
/// its password masked: the message goes to stderr and the journal, also for a URL given in the environment to keep
/// the password out of sight.
public struct DatabaseURLError: Error, CustomStringConvertible, Sendable {
    public var url: String
    public var reason: String
    public var description: String { "bad database URL '\(url)': \(reason)" }

    public init(url: String, reason: String) {
        let masked = Self.masked(url)
        self.url = masked
        // a reason quotes a part of the URL (a port, a parameter); a part the masked URL no longer shows is a password's
        var shown = ""
        var rest = Substring(reason)
        while let open = rest.firstIndex(of: "'"), let close = rest[rest.index(after: open)...].firstIndex(of: "'") {
            let quoted = rest[rest.index(after: open)..<close]
            shown += rest[...open] + (quoted.isEmpty || masked.contains(quoted) ? quoted : "***") + "'"
            rest = rest[rest.index(after: close)...]
        }
        self.reason = shown + rest
    }

    /// `url` with its passwords replaced by `***`: what stands between the user name's ':' and the last '@' before the
    /// query (a password may hold an unencoded '/'), and the value of every `password=` (a query parameter, or a
    /// keyword DSN given by mistake).
    static func masked(_ url: String) -> String {
        var text = url
        let start = text.range(of: "://")?.upperBound ?? text.startIndex
        let queryStart = text[start...].firstIndex(of: "?") ?? text.endIndex
        if let at = text[start..<queryStart].lastIndex(of: "@"), let colon = text[start..<at].firstIndex(of: ":") {
            text = String(text[..<text.index(after: colon)]) + "***" + String(text[at...])
        }
        var result = ""
        var rest = Substring(text)
        while let key = rest.range(of: "password=", options: .caseInsensitive) {
            result += rest[..<key.upperBound] + "***"
            rest = rest[key.upperBound...].drop { $0 != "&" && $0 != " " }
        }
        return result + rest
    }
}

extension DatabaseURL {
    /// Settings for a single `PostgresConnection`.
    public func connectionConfiguration() throws -> PostgresConnection.Configuration {
        var configuration: PostgresConnection.Configuration
        switch self.endpoint {
        case .tcp(let host, let port):
            let tls: PostgresConnection.Configuration.TLS
            switch self.sslMode {
            case .disable: tls = .disable
            case .prefer: tls = .prefer(try NIOSSLContext(configuration: .makeClientConfiguration()))
            case .require: tls = .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
            }
            configuration = .init(host: host, port: port, username: self.username, password: self.password, database: self.database, tls: tls)
        case .unixSocket(let path):
            configuration = .init(unixSocketPath: path, username: self.username, password: self.password, database: self.database)
        }
        configuration.options.connectTimeout = .seconds(5)
        configuration.options.additionalStartupParameters = Self.sessionSettings
        return configuration
    }

    /// Settings of every session dtx opens, whatever the server, database or role say: `synchronous_commit = on`, so
    /// that a write answered as done is on disk (a branch operation, a commit point, an id block, a claim's epoch).
    /// A server tuned with `synchronous_commit = off` would otherwise lose them in a crash of its machine, and with them
    /// the protocol's promises. Writes that recovery can redo turn it off for their own transaction
    /// (`set_config('synchronous_commit', 'off', true)` in the coordinator's log functions).
    static let sessionSettings = [("synchronous_commit", "on")]

    /// Opens one connection, runs `body`, closes it. For admin work and checks, not for serving traffic.
    public func withConnection<Result: Sendable>(
        logger: Logger,
        isolation: isolated (any Actor)? = #isolation,
        _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        let connection: PostgresConnection
        do {
            connection = try await PostgresConnection.connect(configuration: try self.connectionConfiguration(), id: 1, logger: logger)
        } catch {
            throw DatabaseUnreachable(url: self, underlying: error)
        }
        do {
            let result = try await body(connection)
            try? await connection.close()
            return result
        } catch {
            try? await connection.close()
            throw error
        }
    }

    /// Fails with a one-line `DatabaseUnreachable` when the server cannot be reached or refuses the login.
    public func checkReachable(logger: Logger) async throws {
        do {
            _ = try await self.withConnection(logger: logger) { connection in
                try await connection.query("SELECT 1", logger: logger).count()
            }
        } catch let error as DatabaseUnreachable {
            throw error
        } catch {
            throw DatabaseUnreachable(url: self, underlying: error)
        }
    }
}

/// The server behind a URL could not be reached or refused the login; `description` is one line.
public struct DatabaseUnreachable: Error, CustomStringConvertible, Sendable {
    public var url: DatabaseURL
    public var reason: String

    init(url: DatabaseURL, underlying: any Error) {
        self.url = url
        if let error = underlying as? PSQLError {
            if let message = error.serverInfo?[.message] {
                self.reason = message
            } else if let cause = error.underlying {
                self.reason = "\(cause)"
            } else {
                self.reason = "\(error.code)"
            }
        } else {
            self.reason = "\(underlying)"
        }
    }

    public var description: String { "cannot use PostgreSQL at \(url): \(reason)" }
}
