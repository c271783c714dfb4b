import DTXPostgres
import DTXProtocol
import Logging
import PostgresNIO
import Synchronization

/// The coordinators this participant knows, so that its reconciler always has someone to ask about a branch left
/// open: the one configured (`--coordinator`), and every one that has called (the `dtx-coordinator` header, stored
/// with each branch row and, for in-doubt XA branches whose row is inside the prepared transaction, in the
/// `coordinators` table).
public final class KnownCoordinators: Sendable {
    let client: PostgresClient
    let configured: String?
    let logger: Logger
    /// When this process last wrote each URL's `last_seen_at`: one write per URL per `refresh`, not one per call.
    private let recorded = Mutex<[String: ContinuousClock.Instant]>([:])
    /// How stale a coordinator's `last_seen_at` may get while it keeps calling. `known()` keeps the ten most recent,
    /// so a coordinator that calls all along must not look older than one that called once, later.
    let refresh: Duration
    /// A bound on each of its database calls (see `withDeadline`).
    static let callTimeout: Duration = .seconds(5)
    /// URLs kept in memory before the stale ones are forgotten.
    static let rememberedURLs = 1_000
    /// How many URLs this process keeps in memory (for the test of its bound).
    var rememberedCount: Int { recorded.withLock { $0.count } }

    init(client: PostgresClient, configured: String?, refresh: Duration = .seconds(60), logger: Logger) {
        self.client = client
        self.configured = configured
        self.refresh = refresh
        self.logger = logger
    }

    /// Records a coordinator that called: at once when it is new to this process, then at most once per `refresh`.
    func note(_ url: String) async {
        let now = ContinuousClock.now
        let due = recorded.withLock { recorded in
            guard recorded[url].map({ now - $0 >= refresh }) ?? true else { return false }
            // bounded: URLs not seen for a refresh are due again anyway, so forgetting them loses nothing (each call
            // may bring a new one: a header anyone can send without --token)
            if recorded.count >= Self.rememberedURLs { recorded = recorded.filter { now - $0.value < refresh } }
            recorded[url] = now
            return true
        }
        guard due else { return }
        do {
            try await withDeadline(Self.callTimeout) { [client, logger] in
                _ = try await client.rows(
                    "INSERT INTO coordinators (url) VALUES (\(url)) ON CONFLICT (url) DO UPDATE SET last_seen_at = now()", logger: logger
                )
            }
        } catch {
            recorded.withLock { _ = $0.removeValue(forKey: url) }
            logger.warning("could not record a coordinator's URL", metadata: ["dtx.url": "\(url)", "dtx.error": "\(error.logDescription)"])
        }
    }

    /// Whom to ask about a branch: the coordinator stored with it first, then the configured one, then every one that
    /// has called (`known`, most recent first).
    static func candidates(stored: String?, configured: String?, known: [String]) -> [String] {
        var urls: [String] = []
        for url in [stored, configured].compactMap({ $0 }) + known where !urls.contains(url) { urls.append(url) }
        return urls
    }

    /// The coordinators that have called, most recent first (at most 10); none when the table cannot be read.
    func known() async -> [String] {
        do {
            return try await withDeadline(Self.callTimeout) { [client, logger] in
                try await client.rows("SELECT url FROM coordinators ORDER BY last_seen_at DESC LIMIT 10", logger: logger)
                    .map { try $0.decode(String.self) }
            }
        } catch {
            logger.warning("could not read the known coordinators", metadata: ["dtx.error": "\(error.logDescription)"])
            return []
        }
    }
}
