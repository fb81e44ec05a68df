package server

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/headwater-streaming/headwater/sdk-go/internal/pb/udfv1"
	"github.com/headwater-streaming/headwater/sdk-go/internal/worker"
)

// blocking is a map function that holds each record until release is closed, counting how
// many run at once.
func blocking(running, peak *atomic.Int32, release <-chan struct{}) *worker.Function {
	return &worker.Function{
		Name: "block", Kind: pb.FunctionKind_FUNCTION_KIND_MAP, Input: pb.Format_FORMAT_JSON, Output: pb.Format_FORMAT_JSON,
		Fill: func(_ pb.AggregateOp, rec *pb.Record, res *pb.RecordResult) error {
			n := running.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			<-release
			running.Add(-1)
			res.Outputs = append(res.Outputs, rec.Value)
			return nil
		},
	}
}

func start(t *testing.T, h *worker.Handler) (pb.WorkerClient, context.CancelFunc) {
	t.Helper()
	dir, err := os.MkdirTemp("", "hw-srv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "w.sock")
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, lis, h) }()
	conn, err := grpc.NewClient("unix:"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return pb.NewWorkerClient(conn), cancel
}

func TestBatchesInFlightAreBounded(t *testing.T) {
	var running, peak atomic.Int32
	release := make(chan struct{})
	h, err := worker.New([]*worker.Function{blocking(&running, &peak, release)})
	if err != nil {
		t.Fatal(err)
	}
	client, _ := start(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	limit := InFlight()
	for i := range limit + 3 {
		req := &pb.BatchRequest{BatchId: uint64(i), Function: "block", Records: []*pb.Record{{Value: []byte("1")}}}
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for running.Load() < int32(limit) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // would a batch beyond the limit start?
	if got := peak.Load(); got != int32(limit) {
		t.Fatalf("%d batches ran at once, want the limit %d", got, limit)
	}
	close(release)
	seen := map[uint64]bool{}
	for range limit + 3 {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		seen[resp.BatchId] = true
	}
	if len(seen) != limit+3 {
		t.Fatalf("answered %d distinct batches", len(seen))
	}
}

func TestAStreamTheHostDropsMidBatchDoesNotStopTheServer(t *testing.T) {
	var running, peak atomic.Int32
	release := make(chan struct{})
	h, err := worker.New([]*worker.Function{blocking(&running, &peak, release)})
	if err != nil {
		t.Fatal(err)
	}
	client, _ := start(t, h)
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.BatchRequest{BatchId: 1, Function: "block", Records: []*pb.Record{{Value: []byte("1")}}}); err != nil {
		t.Fatal(err)
	}
	for running.Load() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	cancel() // the host gives up on the stream while the batch computes
	time.Sleep(50 * time.Millisecond)
	close(release) // the batch finishes after its stream is gone: nothing is sent, nothing breaks

	hctx, hcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer hcancel()
	if resp, err := client.Health(hctx, &pb.HealthRequest{}); err != nil || !resp.Serving {
		t.Fatalf("health after a dropped stream: %v %v", resp, err)
	}
}

func TestTuneGCRaisesTheTargetUnlessGOGCIsSet(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	t.Setenv("GOGC", "")
	os.Unsetenv("GOGC")
	TuneGC()
	if got := debug.SetGCPercent(100); got != WorkerGCPercent {
		t.Fatalf("GC percent %d, want %d", got, WorkerGCPercent)
	}
	t.Setenv("GOGC", "50")
	debug.SetGCPercent(50)
	TuneGC()
	if got := debug.SetGCPercent(100); got != 50 {
		t.Fatalf("GOGC=50 was overridden: %d", got)
	}
}
