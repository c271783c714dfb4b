import DTXProtocol

/// The ten branch operations, as the routes call them.
extension StockLedger {
    public func perform(_ op: BranchOperation, _ request: BranchRequest) async throws -> BranchResponse {
        switch op {
        // TCC: try -> confirm_pending -> confirm; try -> cancel
        case .tccTry:
            return try await reserve(request, op: op)
        case .tccConfirm:
            return try await advance(request, op: op, from: .tried, to: .confirmPending, done: [.confirmPending, .confirmed])
        case .tccFinalize:
            return try await advance(request, op: op, from: .confirmPending, to: .confirmed, done: [.confirmed])
        case .tccCancel:
            return try await undo(request, op: op, undoable: [.tried], to: .cancelled)
        // Saga: try -> confirm; try | confirm -> compensated
        case .sagaReserve:
            return try await reserve(request, op: op)
        case .sagaConfirm:
            return try await advance(request, op: op, from: .tried, to: .confirmed, done: [.confirmed])
        case .sagaCompensate:
            return try await undo(request, op: op, undoable: [.tried, .confirmed], to: .compensated)
        // XA: prepared (invisible) -> committed row 'confirm' | rolled back (no row)
        case .xaPrepare:
            return try await prepare(request)
        case .xaCommit:
            return try await commitPrepared(request)
        case .xaRollback:
            return try await rollbackPrepared(request)
        }
    }
}
