import ArgumentParser
import DTXCoordinator
import DTXParticipant
import DTXPostgres
import DTXProtocol
import Foundation
import Logging
import ServiceLifecycle

struct ParticipantCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "participant",
        abstract: "Run a stock service (ServiceA, ServiceB, ...): the TCC, Saga and XA branch routes and the reconciler."
    )

    @Option(help: "Service name (letters, digits, _), written in its rows and XA gids.") var name: String
    @Option(help: "Address to bind.") var host: String = "127.0.0.1"
    @Option(help: "Port to listen on.") var port: Int = 8080
    @Option(help: "This service's own database (or DTX_DATABASE_URL).") var databaseURL: String?
    @Option(help: "A coordinator's base URL for the reconciler to ask about stale branches (optional: it also asks the coordinator that called).")
    var coordinator: String?
    @Option(help: "Bearer token required on every request (or DTX_TOKEN).") var token: String?
    @Option(help: "How often the reconciler runs.") var reconcileInterval = DurationArgument(.seconds(300))
    @Option(help: "Age after which a branch left in try or prepared asks the coordinator.") var staleAfter = DurationArgument(.seconds(30))
    @Option(help: "Row lock wait before answering 503.") var lockTimeout = DurationArgument(.seconds(2))
    @Option(help: "Database connections.") var maxConnections: Int = 40
    @OptionGroup var retention: RetentionOptions
    @Option(help: "Fault injection: share of branch calls answered 503 before any work (0-1).") var faultErrorRate: Double = 0
    @Option(help: "Fault injection: share of branch calls done but answered 503 (0-1).") var faultLostReplyRate: Double = 0
    @Option(help: "Fault injection: share of branch calls delayed (0-1).") var faultDelayRate: Double = 0
    @Option(help: "Fault injection: the delay.") var faultDelay = DurationArgument(.milliseconds(500))
    @OptionGroup var lifecycle: LifecycleOptions
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let logger = logging.bootstrap(label: "dtx.participant")
        var configuration = ParticipantConfiguration(name: name, databaseURL: try parseDatabaseURL(databaseURL, what: "this participant"))
        configuration.host = host
        configuration.port = port
        configuration.coordinatorURL = coordinator
        configuration.token = tokenOrEnvironment(token)
        configuration.reconciler.interval = reconcileInterval.duration
        configuration.reconciler.staleAfter = staleAfter.duration
        configuration.lockTimeout = lockTimeout.duration
        configuration.maxDatabaseConnections = maxConnections
        configuration.retention = try retention.configuration()
        configuration.faults.errorRate = faultErrorRate
        configuration.faults.lostReplyRate = faultLostReplyRate
        configuration.faults.delayRate = faultDelayRate
        configuration.faults.delay = faultDelay.duration
        if let coordinator, CoordinatorHeader.validated(coordinator) == nil {
            throw ValidationError("--coordinator '\(coordinator)' must be an http(s) URL such as http://127.0.0.1:8090")
        }
        let participant = try await buildParticipant(configuration, logger: logger) { port in
            logger.info("participant listening", metadata: ["dtx.port": "\(port)"])
        }
        try await runServices([participant.application], lifecycle: lifecycle, logger: logger)
    }
}

struct CoordinatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Run the coordinator: drives TCC, Saga and XA global transactions over the participants, with a durable log."
    )

    @Option(help: "Address to bind.") var host: String = "127.0.0.1"
    @Option(help: "Port to listen on.") var port: Int = 8090
    @Option(help: "The coordinator's own database (or DTX_DATABASE_URL).") var databaseURL: String?
    @Option(name: .customLong("participant"), help: "A participant as NAME=URL; repeat, in order (ServiceA first).")
    var participants: [String] = []
    @Option(help: "Bearer token required on every request and sent to participants (or DTX_TOKEN).") var token: String?
    @Option(help: "One branch call's time limit.") var branchTimeout = DurationArgument(.seconds(3))
    @Option(help: "Time for the first phase (try / reserve / prepare) before it is aborted.") var globalTimeout = DurationArgument(.seconds(10))
    @Option(help: "First retry backoff (doubles per retry).") var initialBackoff = DurationArgument(.milliseconds(100))
    @Option(help: "Largest retry backoff.") var maxBackoff = DurationArgument(.seconds(10))
    @Option(help: "How often the recovery loop looks for work.") var recoveryInterval = DurationArgument(.seconds(1))
    @Option(help: "Lease on a transaction being driven; must exceed the global timeout plus one branch call.") var lease = DurationArgument(.seconds(20))
    @Option(help: "How long POST /v1/transactions drives the second phase before answering 202.") var responseWait = DurationArgument(.seconds(10))
    @Option(help: "This coordinator's name in the log's lease_owner column, for people (default host:port).") var instanceID: String?
    @Option(help: "The URL participants should ask this coordinator at (default http://HOST:PORT).") var advertiseURL: String?
    @Option(help: "Batch second-phase calls to one participant: the longest a call waits for the batch in flight; 0 turns batching off.")
    var batchWindow = DurationArgument(.milliseconds(1))
    @Option(help: "Most second-phase calls in one batch.") var batchMax: Int = 64
    @Option(help: "Database connections.") var maxConnections: Int = 40
    @OptionGroup var retention: RetentionOptions
    @Flag(help: "Serve no status page at GET /.") var noUI = false
    @Flag(help: "XA: prepare at every participant at once (default: in order; concurrent prepares deadlock on hot rows).")
    var xaConcurrentPrepare = false
    @OptionGroup var lifecycle: LifecycleOptions
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let logger = logging.bootstrap(label: "dtx.coordinator")
        let parsed = try participants.map { spec -> CoordinatorConfiguration.Participant in
            let parts = spec.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, !parts[0].isEmpty else { throw ValidationError("--participant '\(spec)': give NAME=URL, e.g. ServiceA=http://127.0.0.1:8080") }
            return .init(name: String(parts[0]), url: String(parts[1]))
        }
        var configuration = CoordinatorConfiguration(databaseURL: try parseDatabaseURL(databaseURL, what: "the coordinator", exampleDatabase: "dtx_coordinator"), participants: parsed)
        configuration.host = host
        configuration.port = port
        configuration.token = tokenOrEnvironment(token)
        configuration.timing.branchTimeout = branchTimeout.duration
        configuration.timing.globalTimeout = globalTimeout.duration
        configuration.timing.initialBackoff = initialBackoff.duration
        configuration.timing.maxBackoff = maxBackoff.duration
        configuration.timing.recoveryInterval = recoveryInterval.duration
        configuration.timing.leaseDuration = lease.duration
        configuration.timing.responseWait = responseWait.duration
        configuration.instanceID = instanceID
        configuration.advertiseURL = advertiseURL
        configuration.batchWindow = batchWindow.duration
        configuration.batchMaxItems = batchMax
        configuration.maxDatabaseConnections = maxConnections
        configuration.retention = try retention.configuration()
        configuration.xaConcurrentPrepare = xaConcurrentPrepare
        configuration.statusPage = !noUI
        let coordinator: Coordinator
        do {
            coordinator = try await buildCoordinator(configuration, logger: logger) { port in
                logger.info("coordinator listening", metadata: ["dtx.port": "\(port)"])
            }
        } catch let error as CoordinatorConfigurationError {
            throw ValidationError(error.description)
        }
        try await runServices([coordinator.application], lifecycle: lifecycle, logger: logger)
    }
}

struct RetentionOptions: ParsableArguments {
    @Option(help: "Keep rows at least this long after they are final, then prune them; 0 keeps everything.")
    var retentionHorizon = DurationArgument(.seconds(6 * 3600))
    @Option(help: "How often retention runs.") var retentionInterval = DurationArgument(.seconds(60))

    func configuration() throws -> Retention.Configuration {
        guard retentionInterval.duration > .zero else { throw ValidationError("--retention-interval must be above 0") }
        var configuration = Retention.Configuration()
        configuration.horizon = retentionHorizon.duration
        configuration.interval = retentionInterval.duration
        return configuration
    }
}

struct LifecycleOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Shut down when this process ends (used by dtx demo and dtx bench).", visibility: .hidden))
    var parentPid: Int32?
}

/// Runs services until SIGTERM or SIGINT, then shuts them down gracefully: no new requests, and those in flight get
/// up to `gracefulShutdownLimit` to finish before they are cancelled (a coordinator's transaction then goes on from its
/// log, driven by recovery). With --parent-pid, the end of that process cancels everything at once: nobody waits for
/// the answers any more (a demo or bench that was stopped or killed leaves no service behind).
func runServices(_ services: [any Service], lifecycle: LifecycleOptions, logger: Logger) async throws {
    var configuration = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
    configuration.maximumGracefulShutdownDuration = gracefulShutdownLimit
    configuration.maximumCancellationDuration = .seconds(10)
    if let parent = lifecycle.parentPid {
        configuration.services.append(.init(service: ParentWatch(pid: parent, logger: logger), successTerminationBehavior: .cancelGroup))
    }
    do {
        try await ServiceGroup(configuration: configuration).run()
    } catch where lifecycle.parentPid.map({ kill($0, 0) != 0 }) == true {
        // cancelled because the parent is gone (ParentWatch said so): the end this process was started for
    }
}

/// How long requests in flight get after SIGTERM or SIGINT.
let gracefulShutdownLimit: Duration = .seconds(10)

/// Ends when the parent process is gone, which cancels the group (see `runServices`).
struct ParentWatch: Service {
    let pid: Int32
    let logger: Logger

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while kill(pid, 0) == 0, await pause(for: .milliseconds(500)) {}
        }
        if kill(pid, 0) != 0 { logger.info("the process that started this one (pid \(pid)) is gone: stopping") }
    }
}
