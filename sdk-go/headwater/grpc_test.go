package headwater_test

// A real gRPC server on a Unix socket, in this process, talked to with the generated client.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/headwater-streaming/headwater/sdk-go/headwater"
	pb "github.com/headwater-streaming/headwater/sdk-go/internal/pb/udfv1"
)

type word struct {
	Word  string `json:"word"`
	Delay int    `json:"delay_ms,omitempty"`
}

func upper(w word) (word, error) {
	time.Sleep(time.Duration(w.Delay) * time.Millisecond)
	return word{Word: strings.ToUpper(w.Word)}, nil
}

// socketDir is a short temporary folder: a Unix socket path must fit in 108 bytes.
func socketDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hw-go-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// serve starts a worker on a Unix socket and returns a client for it; the server stops when
// the test ends, and the test checks that Serve then returned nil.
func serve(t *testing.T, fns ...headwater.Function) pb.WorkerClient {
	t.Helper()
	path := filepath.Join(socketDir(t), "w.sock")
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- headwater.Serve(ctx, lis, fns...) }()
	conn, err := grpc.NewClient("unix:"+path,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after its context was cancelled")
		}
	})
	return pb.NewWorkerClient(conn)
}

func batch(id uint64, function string, values ...string) *pb.BatchRequest {
	req := &pb.BatchRequest{BatchId: id, Function: function}
	for _, v := range values {
		req.Records = append(req.Records, &pb.Record{Value: []byte(v)})
	}
	return req
}

func TestGRPCHandshakeHealthAndConcurrentBatches(t *testing.T) {
	client := serve(t, headwater.Map("upper", upper))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	hello, err := client.Handshake(ctx, &pb.HandshakeRequest{ProtocolVersion: 1, HostVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if hello.ProtocolVersion != 1 || !strings.HasPrefix(hello.Worker, "headwater-go 0.1.0 (go") ||
		len(hello.Functions) != 1 || hello.Functions[0].Name != "upper" ||
		hello.Functions[0].Kind != pb.FunctionKind_FUNCTION_KIND_MAP {
		t.Fatalf("handshake: %v", hello)
	}
	health, err := client.Health(ctx, &pb.HealthRequest{})
	if err != nil || !health.Serving {
		t.Fatalf("health: %v %v", health, err)
	}

	stream, err := client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The server sends its headers before any response: a host may wait for them.
	if _, err := stream.Header(); err != nil {
		t.Fatal(err)
	}
	// Batch 0 is slow: the others, sent after it, come back before it.
	requests := []*pb.BatchRequest{
		batch(0, "upper", `{"word":"slow","delay_ms":400}`),
		batch(1, "upper", `{"word":"a"}`, `{"word":"b"}`),
		batch(2, "upper", `{"word":"c"}`),
		batch(3, "missing", `{}`),
	}
	for _, r := range requests {
		if err := stream.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var order []uint64
	got := map[uint64][]string{}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break // every batch answered, then the stream ends
		}
		if err != nil {
			t.Fatal(err)
		}
		order = append(order, resp.BatchId)
		for _, r := range resp.Results {
			if r.Error != nil {
				got[resp.BatchId] = append(got[resp.BatchId], "error: "+r.Error.Message)
				continue
			}
			got[resp.BatchId] = append(got[resp.BatchId], string(r.Outputs[0]))
		}
	}
	want := map[uint64][]string{
		0: {`{"word":"SLOW"}`},
		1: {`{"word":"A"}`, `{"word":"B"}`},
		2: {`{"word":"C"}`},
		3: {"error: unknown function 'missing'; this worker has: upper"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	if len(order) != 4 || order[3] != 0 {
		t.Errorf("the slow batch 0 should come back last (batches are computed concurrently): %v", order)
	}
}

func TestGRPCCarriesMessagesOfTensOfMegabytes(t *testing.T) {
	client := serve(t, headwater.MapBytes("same", func(b []byte) ([]byte, error) { return b, nil }))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("x"), 20<<20) // far above gRPC's default 4 MiB
	if err := stream.Send(&pb.BatchRequest{BatchId: 9, Function: "same", Records: []*pb.Record{{Value: big}}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if resp.BatchId != 9 || !bytes.Equal(resp.Results[0].Outputs[0], big) {
		t.Fatalf("batch %d came back with %d bytes", resp.BatchId, len(resp.Results[0].Outputs[0]))
	}
}

func TestServeRefusesFunctionsItCannotServe(t *testing.T) {
	lis, err := net.Listen("unix", filepath.Join(socketDir(t), "w.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	err = headwater.Serve(context.Background(), lis, headwater.Map("a", upper), headwater.Map("a", upper))
	if err == nil || !strings.Contains(err.Error(), `two functions are named "a"`) {
		t.Fatalf("got %v", err)
	}
}
