@testable import DTXCoordinator
import DTXProtocol
import Testing

/// The three modes as pure tables: every phase and every outcome, without PostgreSQL or HTTP.
@Suite("Mode machines as transition tables")
struct MachineTests {
    static let refused = StepOutcome.failed(reason: "try at ServiceB refused: insufficient_stock", branch: 1)

    /// One row of a table: phase, outcome, and where it leads (nil: no arrow).
    struct Row: Sendable, CustomTestStringConvertible {
        var machine: String
        var phase: String
        var outcome: StepOutcome
        var expected: Transition?
        var testDescription: String { "\(machine) \(phase) after \(outcome)" }
    }

    static func machine(_ name: String) -> any ModeMachine {
        switch name {
        case "tcc": TCCMachine()
        case "saga": SagaMachine()
        default: XAMachine()
        }
    }

    static let rows: [Row] = [
        // TCC
        Row(machine: "tcc", phase: "try", outcome: .succeeded, expected: Transition(phase: "confirm_pending", status: .pending, durable: true)),
        Row(machine: "tcc", phase: "try", outcome: refused, expected: Transition(phase: "cancel", status: .pending, error: "try at ServiceB refused: insufficient_stock", durable: true)),
        Row(machine: "tcc", phase: "confirm_pending", outcome: .succeeded, expected: Transition(phase: "confirm", status: .completed)),
        Row(machine: "tcc", phase: "confirm_pending", outcome: refused, expected: nil),
        Row(machine: "tcc", phase: "cancel", outcome: .succeeded, expected: Transition(phase: "cancel", status: .failed)),
        Row(machine: "tcc", phase: "cancel", outcome: refused, expected: nil),
        Row(machine: "tcc", phase: "confirm", outcome: .succeeded, expected: nil),
        Row(machine: "tcc", phase: "confirm", outcome: refused, expected: nil),
        // Saga: the step is named in the error, failed is written with the decision to compensate
        Row(machine: "saga", phase: "reserve", outcome: .succeeded, expected: Transition(phase: "confirm", status: .pending, durable: true)),
        Row(machine: "saga", phase: "reserve", outcome: refused,
            expected: Transition(phase: "compensate", status: .failed, error: "step 2: try at ServiceB refused: insufficient_stock", durable: true)),
        Row(machine: "saga", phase: "confirm", outcome: .succeeded, expected: Transition(phase: "confirm", status: .completed)),
        Row(machine: "saga", phase: "confirm", outcome: refused, expected: nil),
        Row(machine: "saga", phase: "compensate", outcome: .succeeded, expected: Transition(phase: "compensate", status: .compensated)),
        Row(machine: "saga", phase: "compensate", outcome: refused, expected: nil),
        // XA
        Row(machine: "xa", phase: "prepare", outcome: .succeeded, expected: Transition(phase: "commit", status: .pending, durable: true)),
        Row(machine: "xa", phase: "prepare", outcome: refused, expected: Transition(phase: "rollback", status: .pending, error: "try at ServiceB refused: insufficient_stock", durable: true)),
        Row(machine: "xa", phase: "commit", outcome: .succeeded, expected: Transition(phase: "commit", status: .completed)),
        Row(machine: "xa", phase: "commit", outcome: refused, expected: nil),
        Row(machine: "xa", phase: "rollback", outcome: .succeeded, expected: Transition(phase: "rollback", status: .failed)),
        Row(machine: "xa", phase: "rollback", outcome: refused, expected: nil),
    ]

    @Test("a participant's error text is kept without NUL (jsonb refuses it) and to 500 characters")
    func errorNote() {
        #expect(BranchRecord.note("refused\u{0}: no") == "refused: no")
        let long = BranchRecord.note(String(repeating: "x", count: 2000))
        #expect(long.count == 501 && long.hasSuffix("…"))
        #expect(BranchRecord.note("short") == "short")
    }

    @Test("every phase and outcome leads where the table says", arguments: rows)
    func transitions(row: Row) {
        #expect(Self.machine(row.machine).transition(from: row.phase, after: row.outcome) == row.expected)
    }

    @Test("the table covers every phase of every mode with both outcomes")
    func coverage() {
        let phases = ["tcc": TCCMachine.Phase.allCases.map(\.rawValue), "saga": SagaMachine.Phase.allCases.map(\.rawValue),
                      "xa": XAMachine.Phase.allCases.map(\.rawValue)]
        for (machine, names) in phases {
            for phase in names {
                #expect(Self.rows.filter { $0.machine == machine && $0.phase == phase }.count == 2, "\(machine) \(phase)")
            }
        }
    }

    @Test("steps: what each phase runs, in which order")
    func steps() {
        #expect(TCCMachine().step(in: "try") == .firstPhase(BranchStep(.tccTry, reaches: .tried), .concurrent))
        #expect(TCCMachine().step(in: "confirm_pending") == .secondPhase(
            [BranchStep(.tccConfirm, reaches: .confirmPending), BranchStep(.tccFinalize, reaches: .confirmed)], .concurrent))
        #expect(TCCMachine().step(in: "cancel") == .secondPhase([BranchStep(.tccCancel, reaches: .cancelled)], .concurrent))
        #expect(TCCMachine().step(in: "confirm") == nil)
        #expect(SagaMachine().step(in: "reserve") == .firstPhase(BranchStep(.sagaReserve, reaches: .reserved), .inOrder))
        #expect(SagaMachine().step(in: "confirm") == .secondPhase([BranchStep(.sagaConfirm, reaches: .confirmed)], .inOrder))
        #expect(SagaMachine().step(in: "compensate") == .secondPhase([BranchStep(.sagaCompensate, reaches: .compensated)], .reverse))
        #expect(XAMachine().step(in: "prepare") == .firstPhase(BranchStep(.xaPrepare, reaches: .prepared), .lockOrder))
        var concurrent = XAMachine()
        concurrent.concurrentPrepare = true
        #expect(concurrent.step(in: "prepare") == .firstPhase(BranchStep(.xaPrepare, reaches: .prepared), .concurrent))
        #expect(XAMachine().step(in: "commit") == .secondPhase([BranchStep(.xaCommit, reaches: .committed)], .concurrent))
        #expect(XAMachine().step(in: "rollback") == .secondPhase([BranchStep(.xaRollback, reaches: .rolledBack)], .concurrent))
    }

    @Test("a phase of another mode has no step, no arrow and no decision: phases are per mode")
    func foreignPhases() {
        for (machine, foreign) in [("tcc", ["reserve", "compensate", "prepare", "commit", "rollback"]),
                                   ("saga", ["try", "confirm_pending", "cancel", "prepare", "commit", "rollback"]),
                                   ("xa", ["try", "confirm_pending", "confirm", "cancel", "reserve", "compensate"])] {
            for phase in foreign + ["", "nonsense"] {
                let table = Self.machine(machine)
                #expect(table.step(in: phase) == nil, "\(machine) \(phase)")
                #expect(table.transition(from: phase, after: .succeeded) == nil, "\(machine) \(phase)")
                #expect(table.decision(in: phase) == nil, "\(machine) \(phase)")
            }
        }
    }

    @Test("decisions: none in the first phase, commit from the commit point on, abort on the undo path")
    func decisions() {
        #expect(TCCMachine().decision(in: "try") == nil)
        #expect(TCCMachine().decision(in: "confirm_pending") == .commit)
        #expect(TCCMachine().decision(in: "confirm") == .commit)
        #expect(TCCMachine().decision(in: "cancel") == .abort)
        #expect(SagaMachine().decision(in: "reserve") == nil)
        #expect(SagaMachine().decision(in: "confirm") == .commit)
        #expect(SagaMachine().decision(in: "compensate") == .abort)
        #expect(XAMachine().decision(in: "prepare") == nil)
        #expect(XAMachine().decision(in: "commit") == .commit)
        #expect(XAMachine().decision(in: "rollback") == .abort)
    }

    @Test("the decisions wait for their WAL flush (the commit point and the abort), the final writes do not")
    func durability() {
        for row in Self.rows {
            guard let transition = row.expected else { continue }
            let isDecision = ["try", "reserve", "prepare"].contains(row.phase)
            #expect(transition.durable == isDecision, "\(row.testDescription)")
        }
    }
}
