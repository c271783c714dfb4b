import ArgumentParser
import DTXPostgres
import Foundation
import Logging

struct PruneCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Run retention once by hand against a participant's or the coordinator's database (it tells which by its tables).",
        discussion: "What may go and why no late request can be applied afterwards: sql/participant/005 (the rules) and 011 (the statement in force), sql/coordinator/003."
    )

    @Option(help: "The database (or DTX_DATABASE_URL).") var databaseURL: String?
    @Option(help: "Prune rows final for longer than this, e.g. 6h.") var horizon: DurationArgument
    @Flag(help: "Count what would be pruned; change nothing.") var dryRun = false

    func run() async throws {
        var logger = Logger(label: "dtx.prune")
        logger.logLevel = .warning
        let url = try parseDatabaseURL(databaseURL, what: "the database to prune", exampleDatabase: "dtx_coordinator")
        guard horizon.duration > .zero else { throw ValidationError("--horizon must be above 0") }
        try await url.withConnection(logger: logger) { connection in
            guard let schema = try await Retention.schema(of: connection, logger: logger) else {
                throw ValidationError("\(url) holds neither a dtx participant's tables (barrier) nor the coordinator's (worker_events)")
            }
            var configuration = Retention.Configuration()
            configuration.horizon = horizon.duration
            let pass = try await Retention(schema: schema, configuration: configuration, logger: logger).prune(connection, dryRun: dryRun)
            print("\(schema.rawValue) database, horizon \(horizon.duration)\(dryRun ? ", dry run: nothing changed" : "")")
            for (table, count) in pass.pruned.sorted(by: { $0.key < $1.key }) {
                print("  \(table): \(count) rows \(dryRun ? "would be pruned" : "pruned")")
            }
            for (table, age) in pass.oldestSeconds.sorted(by: { $0.key < $1.key }) {
                print("  \(table): oldest row \(String(format: "%.0f", age)) s old")
            }
        }
    }
}
