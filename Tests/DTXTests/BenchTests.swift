@testable import DTXBench
import DTXPostgres
import Foundation
import Logging
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The bench's pure parts (the summary, the report model, the conclusions) without processes; then short real runs
/// of `dtx bench --rtt` as a user would start them, including Ctrl-C and a failed start, after which nothing is left.
@Suite("Bench: summary, report model, short --rtt runs", .serialized)
struct BenchTests {
    /// `cpuPer1000`: CPU seconds per 1,000 transactions by process.
    static func run(
        _ throughput: Double, p50: Double, repetition: Int = 1, held: Bool = true, cpuPer1000: [String: Double] = ["coordinator": 1, "postgres": 2]
    ) -> RunResult {
        RunResult(
            repetition: repetition, durationSeconds: 1, transactions: Int(throughput), throughput: throughput,
            latencyMs: Percentiles(p50: p50, p90: p50 * 1.5, p99: p50 * 2, p999: p50 * 3, max: p50 * 4),
            outcomes: Outcomes(completed: Int(throughput)), retries: 0,
            cpuSeconds: cpuPer1000.mapValues { $0 * throughput / 1000 }, invariantsHeld: held, violations: held ? [] : ["broken"]
        )
    }

    @Test("summary: medians with min-max, CPU per 1,000, and ratios to the baselines at the same clients and RTT")
    func summary() {
        let runs: [CellKey: [RunResult]] = [
            CellKey(mode: .direct, clients: 16, rttMs: 0): [Self.run(1000, p50: 10), Self.run(1200, p50: 9), Self.run(1100, p50: 11)],
            CellKey(mode: .pgbenchLocal, clients: 16, rttMs: 0): [Self.run(4000, p50: 2)],
            CellKey(mode: .tccBatch, clients: 16, rttMs: 0): [Self.run(500, p50: 30), Self.run(700, p50: 25), Self.run(600, p50: 20, held: false)],
            CellKey(mode: .tccBatch, clients: 16, rttMs: 5): [Self.run(100, p50: 60)],
            CellKey(mode: .direct, clients: 16, rttMs: 5): [Self.run(400, p50: 12)],
        ]
        let cells = BenchSummary.cells(runs)
        #expect(cells.map(\.rttMs) == [0, 0, 0, 5, 5])
        #expect(cells.map(\.mode) == [.pgbenchLocal, .direct, .tccBatch, .direct, .tccBatch])
        let tcc = cells[2].summary
        #expect(tcc.throughput.median == 600 && tcc.throughput.min == 500 && tcc.throughput.max == 700)
        #expect(tcc.latencyMs.p50 == 25)
        #expect(abs((tcc.ratioToDirect ?? 0) - 600.0 / 1100) < 1e-9)
        #expect(tcc.ratioToPgbenchLocal == 0.15)
        #expect(tcc.ratioToLocal == nil)
        #expect(tcc.invariantsHeld == false)
        #expect(abs((tcc.cpuSecondsPer1000["postgres"] ?? 0) - 2) < 1e-9)
        // at 5 ms the ratio is to direct at 5 ms, not at 0
        #expect(cells[4].summary.ratioToDirect == 0.25)
        #expect(cells[4].summary.ratioToPgbenchLocal == nil)
        #expect(BenchSummary.median([3, 1, 2, 10]) == 2.5)
        // the max is the worst run's, not a median of maxima
        #expect(tcc.latencyMs.max == 120)
    }

    @Test("summary: CPU per 1,000 transactions answered, not per request: a run of instant errors is not cheap")
    func cpuPerAnswered() {
        // 100 answered and 900 errors (a coordinator down), 1 CPU second: 10 s per 1,000 answered (was 1 per request)
        var crashed = Self.run(100, p50: 10, cpuPer1000: ["coordinator": 10])
        crashed.outcomes.errors = 900
        crashed.transactions = 1000
        let summary = BenchSummary.summary([crashed], ratioToLocal: nil, ratioToDirect: nil, ratioToPgbenchLocal: nil, ratioToPgbench2PC: nil)
        #expect(abs((summary.cpuSecondsPer1000["coordinator"] ?? 0) - 10) < 1e-9)
        #expect(summary.outcomes.errors == 900)
    }

    static func results() -> BenchResults {
        let runs: [CellKey: [RunResult]] = [
            CellKey(mode: .direct, clients: 1, rttMs: 0): [Self.run(300, p50: 3)],
            CellKey(mode: .tcc, clients: 1, rttMs: 0): [Self.run(100, p50: 9)],
            CellKey(mode: .tccBatch, clients: 1, rttMs: 0): [Self.run(120, p50: 8)],
            CellKey(mode: .xa, clients: 1, rttMs: 0): [Self.run(90, p50: 11)],
            CellKey(mode: .direct, clients: 1, rttMs: 5): [Self.run(80, p50: 12)],
            CellKey(mode: .tcc, clients: 1, rttMs: 5): [Self.run(18, p50: 55)],
            CellKey(mode: .xa, clients: 1, rttMs: 5): [Self.run(13, p50: 75)],
        ]
        let scenario = ScenarioResult(name: "uniform & co", description: "d", parameters: ["products": "10"], cells: BenchSummary.cells(runs), recoveries: [
            RecoveryTimeline(mode: .tcc, rttMs: 0, fault: "coordinator cut from ServiceB for 3 s, then healed", faultAtSeconds: 2,
                             resolvedAtSeconds: 6.5, recoverySeconds: 4.5, throughputSamples: [10, 0, 10], sampleSeconds: 0.5, invariantsHeld: true),
            // a second run of the same cell, as results written before runs were recorded have it (no repetition)
            RecoveryTimeline(mode: .tcc, rttMs: 0, fault: "coordinator cut from ServiceB for 3 s, then healed", faultAtSeconds: 2,
                             resolvedAtSeconds: 7.5, recoverySeconds: 5.5, throughputSamples: [10, 0, 10], sampleSeconds: 0.5, invariantsHeld: true),
        ])
        let environment = BenchEnvironment(cpuModel: "cpu", cores: 2, memoryGiB: 24, os: "os", postgresVersion: "15", postgresSettings: [:],
                                           gitCommit: "abc", buildConfiguration: "release", startedAt: "s", finishedAt: "f")
        return BenchResults(environment: environment, settings: BenchSettings(rttMs: [0, 5], repeats: 1, durationSeconds: 1, warmupSeconds: 0, loop: "closed", rate: nil), scenarios: [scenario])
    }

    @Test("report model: typed columns, the glance by RTT, and conclusions drawn from the numbers only")
    func reportModel() throws {
        let results = Self.results()
        let view = try #require(ReportScenarioView.all(results).first)
        #expect(view.anchor == "uniform-co")
        #expect(view.rtts == [0, 5])
        #expect(view.modes == [.direct, .tcc, .tccBatch, .xa])
        let columns = ReportColumn.summary(processes: view.processes, hasReferences: false)
        let tccAt5 = try #require(view.cell(.tcc, clients: 1, rtt: 5))
        func value(_ header: String) -> String? { columns.first { $0.header == header }?.value(tccAt5) }
        #expect(value("RTT") == "5ms")
        #expect(value("vs direct") == "0.23×")
        #expect(value("p50") == "55.0")
        #expect(columns.contains { $0.header == "vs pgbench-local" } == false)
        #expect(columns.first { $0.header == "failed" }?.warn(tccAt5) == false)
        let glance = ReportGlanceRow.rows([view])
        #expect(glance.map(\.mode) == [.tcc, .tccBatch, .xa])
        #expect(glance[0].ratioToDirect[5].map { abs($0 - 18.0 / 80) < 1e-9 } == true)
        let conclusions = ReportConclusions.lines([view]).joined(separator: "\n")
        // 5 ms, 1 client: p50 tcc 55 ms over its floor of 10 x 5 ms, xa 75 ms over 14 x 5 ms: the order of the round trips
        #expect(conclusions.contains("`tcc` 55.0 ms (floor 10 × 5ms = 50.0 ms)"))
        #expect(conclusions.contains("`xa` 75.0 ms (floor 14 × 5ms = 70.0 ms)"))
        #expect(conclusions.contains("the order follows the round-trip counts"))
        #expect(conclusions.contains("`tcc+batch` 1.20× of `tcc`"))
        // every row: coordinator 1 and PostgreSQL 2 s per 1,000, so without its coordinator a row costs 2 of direct's 3
        #expect(conclusions.contains("`direct` 3.00; `tcc` 3.00 (coordinator 1.00, at most 1.50×)"))
        #expect(conclusions.contains("final after `tcc` 4.5 s"))
        let markdown = ReportRenderer.markdown(results)
        let html = ReportRenderer.html(results)
        for anchor in ["uniform-co-rtt", "uniform-co-throughput", "which-mode-when"] {
            #expect(html.contains("id=\"\(anchor)\""), "\(anchor)")
        }
        #expect(markdown.contains("## Which mode when"))
        // each run's recovery is told apart: before, the two rows and the two charts' captions were the same
        #expect(markdown.contains("| tcc | 0ms | 1 |") && markdown.contains("| tcc | 0ms | 2 |"), "\(markdown)")
        #expect(html.contains("0ms RTT, run 1") && html.contains("0ms RTT, run 2"))
        #expect(markdown.contains("| vs direct at 5ms |") || markdown.contains("vs direct at 5ms"))
        #expect(!html.contains("src=\"http") && !html.contains("href=\"http") && !html.contains("url(http"), "self-contained")
    }

    // MARK: Real runs

    static func scenarioFile(_ name: String, extra: String = "", scenarioName: String? = nil) throws -> String {
        let path = "/tmp/dtx-test-\(getpid())-\(name).json"
        try """
            {"name": "\(scenarioName ?? name)", "description": "a short test run",
             "workload": {"products": 50, "stock": 100000, "quantity": 1, "distribution": "uniform", "zipfExponent": 1.1, "failShare": 0}\(extra)}
            """.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static func bench(_ arguments: [String], out: String) throws -> ChildProcess {
        try ChildProcess.spawn(name: "bench", executable: try dtxExecutable(), arguments: ["bench"] + arguments + ["--out", out], logPath: out + ".log")
    }

    /// Processes started for `parent` (by their --parent-pid) or relays started by it, still running.
    static func leftovers(of parent: pid_t) -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { entry -> String? in
            guard let pid = pid_t(entry), let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return nil }
            let arguments = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            let fields = ProcessCPU.statFields(pid)
            let isChild = fields.map { $0.count > 1 && pid_t($0[1]) == parent } ?? false
            let mentionsParent = arguments.joined(separator: " ").contains("--parent-pid \(parent)")
            return isChild || mentionsParent ? arguments.joined(separator: " ") : nil
        }
    }

    @Test("a scenario's own modes: run as they are, or narrowed by an explicit --modes (before, --modes did not narrow them)")
    func scenarioModes() throws {
        let fault = try Scenario.load(try Self.scenarioFile(
            "own-modes", extra: #", "modes": ["tcc+batch", "saga+batch"], "crash": {"target": "ServiceB", "atSeconds": 1, "downSeconds": 1}"#
        ))
        let plain = try Scenario.load(try Self.scenarioFile("no-own-modes"))
        func modes(_ given: String?, _ scenario: Scenario) throws -> [String] {
            var options = Bench.Options(executable: "/bin/false", scenarios: [scenario], outputDirectory: "/tmp")
            if let given {
                options.modes = try BenchMode.list(given)
                options.modesGiven = true
            }
            return Bench(options: options, say: { _ in }, logger: Logger(label: "test")).modes(for: scenario).map(\.rawValue)
        }
        #expect(try modes(nil, fault) == ["tcc+batch", "saga+batch"])
        #expect(try modes("saga+batch,xa", fault) == ["saga+batch"])
        #expect(try modes("tcc,saga", fault).isEmpty)  // the bench skips it
        #expect(try modes("direct,tcc", plain).contains("tcc"))
    }

    @Test("where the CPU goes: with one PostgreSQL server per part, the coordinator's log server counts as the coordinator's")
    func cpuLineWithServersApart() throws {
        let cpu = ["coordinator": 1.0, "postgres-coordinator": 0.5, "ServiceA": 0.5, "postgres-ServiceA": 0.5, "postgres-ServiceB": 0.5]
        let runs: [CellKey: [RunResult]] = [
            CellKey(mode: .direct, clients: 16, rttMs: 0): [Self.run(900, p50: 3, cpuPer1000: ["ServiceA": 0.5, "postgres-ServiceA": 0.5])],
            CellKey(mode: .tccBatch, clients: 16, rttMs: 0): [Self.run(300, p50: 9, cpuPer1000: cpu)],
        ]
        var results = Self.results()
        results.scenarios = [ScenarioResult(name: "uniform", description: "d", parameters: [:], cells: BenchSummary.cells(runs), recoveries: [])]
        let view = try #require(ReportScenarioView.all(results).first)
        #expect(view.processes == ["coordinator", "ServiceA", "postgres-coordinator", "postgres-ServiceA", "postgres-ServiceB"])
        let line = try #require(ReportConclusions.cpuLines(view, protocols: [.tccBatch], explain: true).first)
        // 3.0 in all, 1.5 of it the coordinator's process and log server: the rest is 1.5, direct's 1.0 over it
        #expect(line.contains("`direct` 1.00; `tcc+batch` 3.00 (coordinator 1.50, at most 0.67×)"), "\(line)")
        #expect(line.contains("its process and its log's PostgreSQL server"))
    }

    @Test("a short crash scenario: ServiceB killed and restarted mid-run, recovery measured, its CPU counted, invariants held")
    func crashBench() async throws {
        let out = "/tmp/dtx-test-\(getpid())-bench-crash"
        let scenario = try Self.scenarioFile("crash", extra: #", "crash": {"target": "ServiceB", "atSeconds": 1, "downSeconds": 1}"#)
        let bench = try Self.bench([
            "--scenario", scenario, "--modes", "tcc+batch", "--clients", "2", "--duration", "3s", "--warmup", "300ms", "--repeat", "1",
        ], out: out)
        let status = await bench.wait(timeout: .seconds(300))
        #expect(status == 0, "\(bench.logTail(lines: 30))")
        let results = try JSONDecoder().decode(BenchResults.self, from: try Data(contentsOf: URL(fileURLWithPath: "\(out)/results.json")))
        let cell = try #require(results.scenarios.first?.cells.first)
        #expect(cell.summary.invariantsHeld)
        #expect((cell.summary.cpuSecondsPer1000["ServiceB"] ?? 0) > 0)
        let recovery = try #require(results.scenarios.first?.recoveries.first)
        #expect(recovery.recoverySeconds != nil, "every transaction begun before the crash reached its outcome")
        try await eventually("nothing of the bench is left running") { Self.leftovers(of: bench.pid).isEmpty }
    }

    @Test("a short --rtt bench: cells at 0 and 5 ms, the p50 at 5 ms at least its round trips times 5 ms, invariants, nothing left")
    func shortRTTBench() async throws {
        let out = "/tmp/dtx-test-\(getpid())-bench-rtt"
        let bench = try Self.bench([
            "--scenario", try Self.scenarioFile("rtt"), "--modes", "direct,tcc+batch,saga,xa", "--clients", "1", "--rtt", "0ms,5ms",
            "--duration", "1s", "--warmup", "300ms", "--repeat", "1",
        ], out: out)
        let status = await bench.wait(timeout: .seconds(400))
        #expect(status == 0, "\(bench.logTail(lines: 30))")
        let results = try JSONDecoder().decode(BenchResults.self, from: try Data(contentsOf: URL(fileURLWithPath: "\(out)/results.json")))
        let cells = results.scenarios[0].cells
        #expect(Set(cells.map(\.rttMs)) == [0, 5])
        #expect(cells.allSatisfy { $0.summary.invariantsHeld })
        for cell in cells {
            let servers = Set(cell.summary.cpuSecondsPer1000.keys.filter { $0.hasPrefix("postgres") })
            #expect(servers == ["postgres-coordinator", "postgres-ServiceA", "postgres-ServiceB"], "each server its own CPU column")
        }
        for cell in cells where cell.rttMs == 5 {
            let floor = Double(ReportConclusions.criticalPath[cell.mode]!) * 5
            #expect(cell.summary.latencyMs.p50 >= floor, "\(cell.mode.rawValue): p50 \(cell.summary.latencyMs.p50) ms under \(floor) ms")
            #expect(cell.summary.cpuSecondsPer1000["relay"] != nil, "the relay's CPU is a column")
        }
        // (that at 0 ms the p50 is under the same floor is a speed: the release reference report shows it, a test would not)
        let report = try String(contentsOfFile: "\(out)/report.md", encoding: .utf8)
        #expect(report.contains("## Which mode when"))
        try await eventually("nothing of the bench is left running") { Self.leftovers(of: bench.pid).isEmpty }
    }

    @Test("SIGTERM (as Ctrl-C) in the middle of an --rtt bench, and a failed start: nothing is left running, no servers left behind")
    func interruptAndFailedStart() async throws {
        let out = "/tmp/dtx-test-\(getpid())-bench-int"
        let bench = try Self.bench([
            "--scenario", try Self.scenarioFile("int"), "--modes", "tcc+batch", "--clients", "1", "--rtt", "5ms",
            "--duration", "30s", "--warmup", "0ms", "--repeat", "1",
        ], out: out)
        try await eventually("the run is under way", timeout: .seconds(120)) { bench.logTail().contains("tcc+batch 1 clients") }
        #expect(!Self.leftovers(of: bench.pid).isEmpty)
        // SIGTERM (kill, timeout, a cancelled CI job), handled as Ctrl-C is: both signals' sources are kept alive
        // (SIGTERM's used to be dropped, and the run went on to its end, ignoring the signal)
        bench.signal(SIGTERM)
        #expect(await bench.wait(timeout: .seconds(30)) == 130)
        try await eventually("nothing left after SIGTERM") {
            Self.leftovers(of: bench.pid).isEmpty && !FileManager.default.fileExists(atPath: "/tmp/dtx-bench-\(bench.pid)")
        }
        // a participant that cannot start: the bench says so, stops the relay and the others, removes its servers
        let failing = try Self.bench([
            "--scenario", try Self.scenarioFile("fail", extra: #", "participantArguments": {"ServiceB": ["--lock-timeout", "soon"]}"#),
            "--modes", "tcc", "--clients", "1", "--rtt", "5ms", "--duration", "1s", "--warmup", "0ms", "--repeat", "1",
        ], out: out + "-fail")
        let status = await failing.wait(timeout: .seconds(120))
        #expect(status != nil && status != 0)
        #expect(failing.logTail(lines: 40).contains("ServiceB exited"))
        try await eventually("nothing left after a failed start") {
            Self.leftovers(of: failing.pid).isEmpty && !FileManager.default.fileExists(atPath: "/tmp/dtx-bench-\(failing.pid)")
        }
    }
}
