package ingest

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jasperfed/jasper/hub/store"
	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// adminServer implements AdminService for clients of role admin.
type adminServer struct {
	jasperv1.UnimplementedAdminServiceServer
	s *Server
}

// StatusResponse converts a store status to the wire form.
func StatusResponse(st store.Status) *jasperv1.StatusResponse {
	resp := &jasperv1.StatusResponse{
		NodeId:        st.NodeID,
		RaftState:     st.State,
		LeaderId:      st.LeaderID,
		LeaderAddress: st.LeaderAddr,
		CommitIndex:   st.CommitIndex,
		AppliedIndex:  st.AppliedIndex,
		LastLogIndex:  st.LastIndex,
		LoadedIndex:   st.LoadedIndex,
		LoaderLagRows: st.PendingRows,
	}
	for _, m := range st.Members {
		resp.Members = append(resp.Members, &jasperv1.Member{Id: m.ID, RaftAddress: m.RaftAddr, Suffrage: m.Suffrage})
	}
	for _, ss := range st.Sensors {
		resp.Sensors = append(resp.Sensors, &jasperv1.SensorStatus{
			SensorId:      ss.SensorId,
			Country:       ss.Country,
			LastSequence:  ss.LastSequence,
			LastBinStart:  ss.LastBinStart,
			LastBatchAtMs: ss.LastBatchAtMs,
			Batches:       ss.Batches,
			Rows:          ss.Rows,
			Packets:       ss.Packets,
		})
	}
	return resp
}

// Status reports the node's state. The FSM index and state hash travel
// in the response headers jasper-fsm-index and jasper-state-hash.
func (a *adminServer) Status(ctx context.Context, _ *jasperv1.StatusRequest) (*jasperv1.StatusResponse, error) {
	if _, _, err := a.s.authorize(ctx, pki.RoleAdmin); err != nil {
		return nil, err
	}
	st, err := a.s.deps.Store.Status()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "status: %v", err)
	}
	stateHeader(ctx, st.FSMIndex, st.StateHash)
	return StatusResponse(st), nil
}

func membershipError(err error) error {
	var nl *store.NotLeaderError
	switch {
	case errors.As(err, &nl):
		return status.Error(codes.FailedPrecondition, nl.Error())
	case errors.Is(err, store.ErrNotOpen):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// Join adds a hub as a voter (leader only; followers name the leader).
func (a *adminServer) Join(ctx context.Context, req *jasperv1.JoinRequest) (*jasperv1.JoinResponse, error) {
	if _, _, err := a.s.authorize(ctx, pki.RoleAdmin); err != nil {
		return nil, err
	}
	if req.NodeId == "" || req.RaftAddress == "" {
		return nil, status.Error(codes.InvalidArgument, "join: node_id and raft_address are required")
	}
	if err := a.s.deps.Store.Join(ctx, req.NodeId, req.RaftAddress); err != nil {
		return nil, membershipError(err)
	}
	a.s.log.Info("admin_join", "node_id", req.NodeId, "raft_addr", req.RaftAddress)
	return &jasperv1.JoinResponse{}, nil
}

// Leave removes a hub (leader only; followers name the leader).
func (a *adminServer) Leave(ctx context.Context, req *jasperv1.LeaveRequest) (*jasperv1.LeaveResponse, error) {
	if _, _, err := a.s.authorize(ctx, pki.RoleAdmin); err != nil {
		return nil, err
	}
	if req.NodeId == "" {
		return nil, status.Error(codes.InvalidArgument, "leave: node_id is required")
	}
	if err := a.s.deps.Store.Leave(ctx, req.NodeId); err != nil {
		return nil, membershipError(err)
	}
	a.s.log.Info("admin_leave", "node_id", req.NodeId)
	return &jasperv1.LeaveResponse{}, nil
}
