/// `POST /v1/transactions`.
///
/// Short form (the documented behaviour): `{"mode": "tcc", "product_id": 1, "quantity": 10}` applies the same item at
/// every participant the coordinator knows, in the order they were configured.
/// Explicit form: `{"mode": "saga", "branches": [{"participant": "ServiceA", "product_id": 1, "quantity": 10}, ...]}`.
public struct TransactionRequest: Codable, Sendable, Hashable {
    enum CodingKeys: String, CodingKey {
        case mode, productId = "product_id", quantity, branches
    }

    public struct Branch: Codable, Sendable, Hashable {
        enum CodingKeys: String, CodingKey { case participant, productId = "product_id", quantity }

        public var participant: String
        public var productId: Int64
        public var quantity: Int64

        public init(participant: String, productId: Int64, quantity: Int64) {
            self.participant = participant
            self.productId = productId
            self.quantity = quantity
        }
    }

    public var mode: Mode
    public var productId: Int64?
    public var quantity: Int64?
    public var branches: [Branch]?

    public init(mode: Mode, productId: Int64, quantity: Int64) {
        self.mode = mode
        self.productId = productId
        self.quantity = quantity
    }

    public init(mode: Mode, branches: [Branch]) {
        self.mode = mode
        self.branches = branches
    }

    /// Optional fields may be left out, not null (the contract has no nulls in requests).
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        mode = try container.decode(Mode.self, forKey: .mode)
        productId = container.contains(.productId) ? try container.decode(Int64.self, forKey: .productId) : nil
        quantity = container.contains(.quantity) ? try container.decode(Int64.self, forKey: .quantity) : nil
        branches = container.contains(.branches) ? try container.decode([Branch].self, forKey: .branches) : nil
    }

    /// The branches this request names, checked against the known participants.
    /// A participant may appear more than once, but not twice with the same product (a branch is identified at a
    /// participant by worker_event_id and product_id).
    public func resolveBranches(participants: [String]) throws(ProtocolError) -> [Branch] {
        let branches: [Branch]
        if let explicit = self.branches {
            guard self.productId == nil && self.quantity == nil else {
                throw .badRequest("give either product_id and quantity, or branches, not both")
            }
            guard !explicit.isEmpty else { throw .badRequest("branches must not be empty") }
            guard explicit.count <= 64 else { throw .badRequest("at most 64 branches") }
            branches = explicit
        } else {
            guard let productId, let quantity else {
                throw .badRequest("give product_id and quantity (the same item at every participant), or branches")
            }
            guard !participants.isEmpty else { throw .badRequest("the coordinator has no participants configured") }
            branches = participants.map { Branch(participant: $0, productId: productId, quantity: quantity) }
        }
        var seen: Set<String> = []
        for branch in branches {
            guard branch.productId >= 1 else { throw .badRequest("product_id must be a positive integer") }
            try Limits.validateQuantity(branch.quantity)
        }
        // well-formed, but not one this coordinator can run (409: nothing is logged)
        for branch in branches {
            guard participants.contains(branch.participant) else {
                throw ProtocolError(.unknownParticipant, "unknown participant '\(branch.participant)': known are \(participants.joined(separator: ", "))")
            }
            guard seen.insert("\(branch.participant)/\(branch.productId)").inserted else {
                throw ProtocolError(.duplicateBranch, "participant '\(branch.participant)' is named twice with product \(branch.productId)")
            }
        }
        return branches
    }
}

/// One branch as the coordinator records it.
public struct BranchRecord: Codable, Sendable, Hashable {
    enum CodingKeys: String, CodingKey {
        case participant, productId = "product_id", quantity, state, attempts, lastError = "last_error"
    }

    /// The coordinator's view of a branch.
    public enum State: String, Codable, Sendable {
        case pending
        case tried, confirmPending = "confirm_pending", confirmed, cancelled
        case reserved, compensated
        case prepared, committed, rolledBack = "rolled_back"
        /// The participant refused the first-phase call (409).
        case refused
    }

    public var participant: String
    public var productId: Int64
    public var quantity: Int64
    public var state: State
    public var attempts: Int
    public var lastError: String?

    public init(participant: String, productId: Int64, quantity: Int64, state: State = .pending, attempts: Int = 0, lastError: String? = nil) {
        self.participant = participant
        self.productId = productId
        self.quantity = quantity
        self.state = state
        self.attempts = attempts
        self.lastError = lastError
    }

    /// One more call counted; saturating, since the count comes from the log, where an operator may have written any
    /// number (an overflow would stop every coordinator that claims the row, one after the other).
    public mutating func countAttempt() {
        attempts = attempts == .max ? .max : attempts + 1
    }
}

/// `GET /v1/transactions/{id}` and the answer of `POST /v1/transactions`.
public struct TransactionView: Codable, Sendable, Hashable {
    enum CodingKeys: String, CodingKey {
        case id, mode, status, phase, decision, errorMessage = "error_message", branches, attempts, createdAt = "created_at", updatedAt = "updated_at", nextRetryAt = "next_retry_at"
    }

    public var id: Int64
    public var mode: Mode
    public var status: GlobalStatus
    public var phase: String
    /// Set once the coordinator has logged its decision (the commit point, or the abort).
    public var decision: Decision?
    public var errorMessage: String?
    public var branches: [BranchRecord]
    public var attempts: Int
    public var createdAt: String
    public var updatedAt: String
    public var nextRetryAt: String?

    public init(
        id: Int64, mode: Mode, status: GlobalStatus, phase: String, decision: Decision?, errorMessage: String?,
        branches: [BranchRecord], attempts: Int, createdAt: String, updatedAt: String, nextRetryAt: String?
    ) {
        self.id = id
        self.mode = mode
        self.status = status
        self.phase = phase
        self.decision = decision
        self.errorMessage = errorMessage
        self.branches = branches
        self.attempts = attempts
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.nextRetryAt = nextRetryAt
    }
}

/// `GET /v1/transactions?status=&mode=&limit=&cursor=`: newest first; `next` is the cursor of the following page, or
/// null on the last one.
public struct TransactionList: Codable, Sendable {
    public var transactions: [TransactionView]
    public var next: String?

    public init(transactions: [TransactionView], next: String?) {
        self.transactions = transactions
        self.next = next
    }

    enum CodingKeys: String, CodingKey { case transactions, next }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(transactions, forKey: .transactions)
        try container.encode(next, forKey: .next)  // null on the last page, not left out
    }
}
