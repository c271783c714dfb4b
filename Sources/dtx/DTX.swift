import ArgumentParser
import Foundation

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

    /// As ArgumentParser's own, except that a `ValidationError` a command throws from its `run()` (a check that needs
    /// files, the clock or other flags together) points at that command's help: ArgumentParser would print the usage of
    /// `dtx` itself ("Usage: dtx <subcommand>"), which tells nothing about the flag to fix.
    static func main() async {
        var command: any ParsableCommand
        do {
            command = try await asyncParseAsRoot()
        } catch {
            exit(withError: error)
        }
        do {
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as ValidationError {
            let name = commandPath(to: type(of: command))?.joined(separator: " ") ?? "dtx"
            FileHandle.standardError.write(Data("Error: \(error.message)\nSee '\(name) --help'.\n".utf8))
            Foundation.exit(ExitCode.validationFailure.rawValue)
        } catch {
            exit(withError: error)
        }
    }

    /// The words that name `command` on the command line, e.g. ["dtx", "postgres", "start"].
    static func commandPath(to command: any ParsableCommand.Type, from root: any ParsableCommand.Type = DTX.self) -> [String]? {
        if root == command { return [root._commandName] }
        for sub in root.configuration.subcommands {
            if let path = commandPath(to: command, from: sub) { return [root._commandName] + path }
        }
        return nil
    }
}
