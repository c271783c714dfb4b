import ArgumentParser

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
}
