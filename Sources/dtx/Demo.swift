import ArgumentParser
struct Demo: AsyncParsableCommand { static let configuration = CommandConfiguration(commandName: "demo", abstract: "Run all three modes end to end on a throwaway PostgreSQL."); func run() async throws {} }
