import DTXHTTP
import DTXParticipant
import DTXPostgres
import Hummingbird
import Logging
import ServiceLifecycle
import Testing

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

    /// Graceful shutdown, cancelled after `grace` (a test that hangs in its clean-up fails instead: CI has a deadline).
    /// A service that ends with an error after a graceful shutdown fails the test: the process would exit with
    /// status 1 after a plain SIGTERM.
    func stop(grace: Duration = .seconds(30)) async {
        await group.triggerGracefulShutdown()
        if let result = await Self.ended(task, within: grace) {
            if case .failure(let error) = result {
                Issue.record("the service on port \(port) ended with an error after a graceful shutdown: \(error)")
            }
            return
        }
        Issue.record("the service on port \(port) did not shut down within \(grace) of a graceful shutdown; cancelled")
        task.cancel()
        _ = await Self.ended(task, within: .seconds(10))
    }

    /// How `task` ended, if it does within `timeout` (awaiting a task's value cannot be cancelled, so it is watched, not
    /// awaited).
    static func ended(_ task: Task<Void, any Error>, within timeout: Duration) async -> Result<Void, any Error>? {
        let ended = Outcome()
        Task { await ended.set(await task.result) }
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let result = await ended.value { return result }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return await ended.value
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

private actor Outcome {
    private(set) var value: Result<Void, any Error>?
    func set(_ result: Result<Void, any Error>) { value = result }
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
