import ArgumentParser
import DTXBench
import Dispatch
import Foundation
import Glibc
import Logging

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run TCC, Saga and XA end to end on a throwaway PostgreSQL, with ServiceA, ServiceB and a coordinator."
    )

    @Flag(help: "Keep the cluster and the services running at the end, and print how to reach them.") var keep = false
    @Option(help: "Transactions per mode in the short load.") var transactions: Int = 300
    @Option(help: "Clients in the short load.") var clients: Int = 4

    func run() async throws {
        var logger = Logger(label: "dtx.demo")
        logger.logLevel = .warning
        var options = DTXBench.Demo.Options(executable: selfExecutable())
        options.keep = keep
        options.loadTransactions = transactions
        options.loadClients = clients
        let cleanup = CleanupList()
        let interrupt = onInterrupt {
            FileHandle.standardError.write(Data("\ninterrupted: stopping the services and removing the cluster\n".utf8))
            cleanup.runAll()
            Glibc.exit(130)
        }
        defer { interrupt.cancel() }
        do {
            try await DTXBench.Demo(options: options, print: { FileHandle.standardOutput.write(Data(($0 + "\n").utf8)) }, logger: logger).run(cleanup: cleanup)
        } catch {
            cleanup.runAll()
            throw error
        }
    }
}

/// This program's own path, to start the services from.
func selfExecutable() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}

/// Runs `handler` on SIGINT or SIGTERM instead of dying at once, until `cancel()`.
///
/// Both signal sources are kept: a dispatch source whose last reference goes is cancelled, and its signal (ignored
/// here, so that the handler runs instead) would then do nothing at all: `kill` or `timeout` could not stop the run.
func onInterrupt(_ handler: @escaping @Sendable () -> Void) -> InterruptHandler {
    InterruptHandler(sources: [SIGINT, SIGTERM].map { signalNumber -> any DispatchSourceSignal in
        signal(signalNumber, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
        source.setEventHandler(handler: handler)
        source.resume()
        return source
    })
}

/// The signal sources `onInterrupt` made.
struct InterruptHandler {
    let sources: [any DispatchSourceSignal]

    func cancel() {
        for source in sources { source.cancel() }
    }
}
