import DTXProtocol

/// One branch operation and the state a branch reaches when it succeeds.
public struct BranchStep: Sendable, Equatable {
    public var op: BranchOperation
    public var reaches: BranchRecord.State

    public init(_ op: BranchOperation, reaches: BranchRecord.State) {
        self.op = op
        self.reaches = reaches
    }
}

/// The order in which a step visits the branches.
public enum BranchOrder: Sendable, Equatable {
    /// All at once.
    case concurrent
    /// One after the other, in the order of the request; a first phase stops at the first failure.
    case inOrder
    /// One after the other, last branch first (compensations).
    case reverse
    /// One after the other, in one order every coordinator shares whatever the request's order: by participant name,
    /// then product id; a first phase stops at the first failure. For first phases that keep their rows locked until
    /// the second phase (XA's prepares): transactions then take the rows in the same order and queue, where two
    /// requests naming the same rows in opposite orders would each hold one and wait for the other's to the timeout.
    case lockOrder

    /// The branches' indices in the order to visit them.
    // (not inlined, and sorted without a closure: the release build's optimizer crashed on the closure inlined into
    // TransactionDriver.firstPhase, Swift 6.3.1, "Found ownership error" in CopyPropagation)
    @inline(never)
    func indices(_ branches: [BranchRecord]) -> [Int] {
        switch self {
        case .concurrent, .inOrder: Array(branches.indices)
        case .reverse: Array(branches.indices.reversed())
        case .lockOrder: branches.enumerated().map { LockKey(participant: $1.participant, productId: $1.productId, index: $0) }.sorted().map(\.index)
        }
    }

    /// A branch's place in lock order (its index last, so that equal keys keep the request's order).
    private struct LockKey: Comparable {
        var participant: String
        var productId: Int64
        var index: Int

        static func < (a: LockKey, b: LockKey) -> Bool {
            (a.participant, a.productId, a.index) < (b.participant, b.productId, b.index)
        }
    }
}

/// What a mode's machine asks the driver to run in a phase.
public enum Step: Sendable, Equatable {
    /// The first phase: `BranchStep` at every branch, each retried within the transaction's deadline. It fails at the
    /// first refusal (409) or when the deadline passes.
    case firstPhase(BranchStep, BranchOrder)
    /// The second phase: the `BranchStep`s in turn at every branch, each retried until it succeeds.
    case secondPhase([BranchStep], BranchOrder)
}

/// What a step came to. A second phase only ever succeeds: until then it is retried (or postponed, which the driver
/// handles without asking the machine).
public enum StepOutcome: Sendable, Equatable {
    case succeeded
    /// A first-phase call was refused, or the deadline passed; `branch` is the index of the branch (a Saga names it as
    /// the step).
    case failed(reason: String, branch: Int)
}

/// The next phase and status, and whether recovery needs the write on disk before the next step.
public struct Transition: Sendable, Equatable {
    public var phase: String
    public var status: GlobalStatus
    /// Replaces the transaction's error message when set.
    public var error: String?
    /// A decision (the commit point or the abort) is durable before the second phase acts on it: a driver may outlive a
    /// crash of the log's server, and a lost decision would let another driver repeat the first phase and decide the
    /// other way while this one still sends its second phase (a split outcome). The first record may be lost (presumed
    /// abort: nobody acted on it; the driver's next write is refused), and a lost final write only makes recovery drive
    /// the second phase once more (every branch call is idempotent).
    public var durable: Bool

    public init(phase: String, status: GlobalStatus, error: String? = nil, durable: Bool = false) {
        self.phase = phase
        self.status = status
        self.error = error
        self.durable = durable
    }
}

/// A mode as a pure transition table: (phase, outcome of its step) -> (next phase, status). No I/O: the driver runs the
/// steps and records the transitions.
public protocol ModeMachine: Sendable {
    var mode: Mode { get }
    /// The phase a new transaction is logged in.
    var firstPhase: String { get }
    /// The step of a transaction that is still open in `phase`; nil when the phase is not one of this mode's or has no
    /// step.
    func step(in phase: String) -> Step?
    /// Where `outcome` of the step of `phase` leads; nil when the phase is not one of this mode's, or the pair has no
    /// arrow.
    func transition(from phase: String, after outcome: StepOutcome) -> Transition?
    /// The decision a phase stands for (nil: not decided yet, or not a phase of this mode).
    func decision(in phase: String) -> Decision?
}

/// A `ModeMachine` written over its own phase enum: the log's phase words are parsed here, once.
public protocol PhaseTable: ModeMachine {
    associatedtype Phase: RawRepresentable<String>, CaseIterable, Sendable
    func step(_ phase: Phase) -> Step?
    func transition(_ phase: Phase, _ outcome: StepOutcome) -> Transition?
    func decision(_ phase: Phase) -> Decision?
}

extension PhaseTable {
    public func step(in phase: String) -> Step? { Phase(rawValue: phase).flatMap(step) }
    public func transition(from phase: String, after outcome: StepOutcome) -> Transition? { Phase(rawValue: phase).flatMap { transition($0, outcome) } }
    public func decision(in phase: String) -> Decision? { Phase(rawValue: phase).flatMap(decision) }
}

/// The machines of the three modes.
public struct ModeMachines: Sendable {
    public var tcc = TCCMachine()
    public var saga = SagaMachine()
    public var xa = XAMachine()

    public init(xaConcurrentPrepare: Bool = false) {
        xa.concurrentPrepare = xaConcurrentPrepare
    }

    public subscript(mode: Mode) -> any ModeMachine {
        switch mode {
        case .tcc: tcc
        case .saga: saga
        case .xa: xa
        }
    }
}
