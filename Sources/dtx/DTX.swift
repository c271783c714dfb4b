import ArgumentParser
import Foundation
import NIOCore

@main
struct DTX: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dtx",
        abstract: "Distributed transactions between HTTP services on PostgreSQL: TCC, Saga and XA, and a benchmark of the three.",
        subcommands: [
            Demo.self, PostgresCommand.self, ParticipantCommand.self, CoordinatorCommand.self,
            RunCommand.self, StatusCommand.self, ListCommand.self, VerifyCommand.self, BenchCommand.self, ReportCommand.self,
            RelayCommand.self, PruneCommand.self,
        ]
    )

    static func main() async {
        if let loops = ProcessInfo.processInfo.environment["DTX_EXPERIMENT_LOOPS"].flatMap(Int.init) {
            NIOSingletons.groupLoopCountSuggestion = loops
        }
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}
