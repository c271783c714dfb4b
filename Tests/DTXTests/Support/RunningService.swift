import DTXHTTP
import DTXParticipant
import DTXPostgres
import Hummingbird
import Logging
import ServiceLifecycle

/// A service started in this process on a free port, stopped by `stop()`.
struct RunningService: Sendable {
    let port: Int
    let group: ServiceGroup
    let task: Task<Void, any Error>

    var url: String { "http://127.0.0.1:\(port)" }

    /// Runs `service` in a ServiceGroup; `build` gets the callback to report the bound port.
    static func start(
        _ build: (@escaping @Sendable (Int) async -> Void) async throws -> any Service
    ) async throws -> RunningService {
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let service = try await build { port in continuation.yield(port) }
        let group = ServiceGroup(configuration: .init(services: [service], gracefulShutdownSignals: [], logger: TestPostgres.logger))
        let task = Task {
            defer { continuation.finish() }
            try await group.run()
        }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else {
            try await task.value
            struct DidNotStart: Error {}
            throw DidNotStart()
        }
        return RunningService(port: port, group: group, task: task)
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }
}

/// Test settings for a participant on `url`.
func participantConfiguration(_ name: String, _ url: DatabaseURL, coordinator: String? = nil) -> ParticipantConfiguration {
    var configuration = ParticipantConfiguration(name: name, databaseURL: url)
    configuration.port = 0
    configuration.coordinatorURL = coordinator
    configuration.reconciler.interval = .seconds(3600)  // tests call runOnce() themselves unless they say otherwise
    configuration.lockTimeout = .milliseconds(500)
    return configuration
}

extension RunningService {
    static func participant(_ configuration: ParticipantConfiguration) async throws -> (RunningService, Participant) {
        let box = ParticipantBox()
        let running = try await RunningService.start { onPort in
            let participant = try await buildParticipant(configuration, logger: TestPostgres.logger, onServerRunning: onPort)
            await box.set(participant)
            return participant.application
        }
        return (running, await box.participant!)
    }
}

private actor ParticipantBox {
    var participant: Participant?
    func set(_ participant: Participant) { self.participant = participant }
}

/// Runs `body`, then `cleanup`, also when `body` throws.
func withCleanup<T>(_ body: () async throws -> T, cleanup: () async -> Void) async throws -> T {
    do {
        let result = try await body()
        await cleanup()
        return result
    } catch {
        await cleanup()
        throw error
    }
}
