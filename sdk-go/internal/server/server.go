// Package server serves a worker.Handler over gRPC, and implements the worker process's
// launch contract (flags, readiness line, exit codes, exiting with the host).
package server

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	pb "github.com/headwater-streaming/headwater/sdk-go/internal/pb/udfv1"
	"github.com/headwater-streaming/headwater/sdk-go/internal/worker"
)

// MaxMessage is the largest gRPC message the worker sends or receives.
const MaxMessage = 64 << 20

// Window is the HTTP/2 flow-control window of each stream: several requests of a few hundred
// records fit in it, so the host never waits for a window update between them.
const Window = 4 << 20

// StopGrace is how long a stopping server waits for calls in progress before closing them
// (the host keeps its Process stream open, so a graceful stop alone would never end).
const StopGrace = time.Second

// InFlight is how many batches of one Process stream are computed at once; further
// requests wait (which holds back the host through gRPC flow control).
func InFlight() int { return max(4, 2*runtime.GOMAXPROCS(0)) }

// New returns a gRPC server with the Worker service of h registered.
func New(h *worker.Handler) *grpc.Server {
	s := grpc.NewServer(grpc.MaxRecvMsgSize(MaxMessage), grpc.MaxSendMsgSize(MaxMessage),
		grpc.InitialWindowSize(Window), grpc.InitialConnWindowSize(4*Window),
		grpc.ReadBufferSize(256<<10), grpc.WriteBufferSize(256<<10))
	pb.RegisterWorkerServer(s, &service{handler: h, inFlight: InFlight()})
	return s
}

// Serve serves h on lis until ctx is done, then stops (waiting up to StopGrace for calls in
// progress). It returns nil after a stop asked for through ctx.
func Serve(ctx context.Context, lis net.Listener, h *worker.Handler) error {
	s := New(h)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		Stop(s)
	}()
	err := s.Serve(lis)
	if ctx.Err() != nil {
		<-stopped
		return nil
	}
	return err
}

// Stop stops s gracefully, closing what is still open after StopGrace.
func Stop(s *grpc.Server) {
	done := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(StopGrace):
		s.Stop()
		<-done
	}
}

type service struct {
	pb.UnimplementedWorkerServer
	handler  *worker.Handler
	inFlight int
}

func (s *service) Handshake(_ context.Context, req *pb.HandshakeRequest) (*pb.HandshakeResponse, error) {
	return s.handler.Handshake(req), nil
}

func (s *service) Health(context.Context, *pb.HealthRequest) (*pb.HealthResponse, error) {
	return &pb.HealthResponse{Serving: true}, nil
}

// Process computes the stream's batches concurrently (up to inFlight at once) and sends
// each response as soon as it is ready: responses are matched by batch_id, in any order.
func (s *service) Process(stream grpc.BidiStreamingServer[pb.BatchRequest, pb.BatchResponse]) error {
	// Headers now, not with the first response: a client may wait for them before it sends
	// its first request.
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	var (
		mu      sync.Mutex // guards Send (one sender at a time), closed and sendErr
		closed  bool       // the handler returned early: send nothing more
		sendErr error
		wg      sync.WaitGroup
		slots   = make(chan struct{}, s.inFlight)
		ctx     = stream.Context()
	)
	abandon := func(err error) error {
		mu.Lock()
		closed = true
		mu.Unlock()
		return err
	}
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break // the host closed its side: finish the batches in flight, then end
		}
		if err != nil {
			return abandon(err)
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return abandon(ctx.Err())
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			resp := s.handler.Process(req)
			mu.Lock()
			defer mu.Unlock()
			if closed || sendErr != nil {
				return
			}
			sendErr = stream.Send(resp)
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	return sendErr
}
