package peer

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
)

// ErrAuth: the peer failed the handshake (it does not hold the cluster
// secret, or refused ours). A client returns it wrapped together with
// blocks.ErrUnavailable.
var ErrAuth = errors.New("peer: authentication failed")

// MinSecret is the shortest cluster secret accepted, in bytes.
const MinSecret = 16

const (
	authLabel  = "cairn-peer-v1"
	roleClient = "client"
	roleServer = "server"
)

// proof is HMAC-SHA256(secret, "cairn-peer-v1" || role || client nonce ||
// server nonce || len(client ID) || client ID || len(server ID) || server ID),
// the lengths one byte each.
func proof(secret []byte, role string, nc, ns [32]byte, idc, ids string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(authLabel))
	m.Write([]byte(role))
	m.Write(nc[:])
	m.Write(ns[:])
	m.Write([]byte{byte(len(idc))})
	m.Write([]byte(idc))
	m.Write([]byte{byte(len(ids))})
	m.Write([]byte(ids))
	return m.Sum(nil)
}

func checkNodeID(id string) error {
	if len(id) > maxNodeID {
		return fmt.Errorf("peer: node ID of %d bytes: at most %d", len(id), maxNodeID)
	}
	return nil
}

// clientHandshake runs the client side over rw (reads through r, which
// wraps rw and must be used for every later read). It returns the server's
// node ID. The caller sets the connection's deadline.
func clientHandshake(rw io.Writer, r io.Reader, secret []byte, nodeID string) (string, error) {
	h := hello{version: protocolVersion, nodeID: nodeID}
	if _, err := rand.Read(h.nonce[:]); err != nil {
		return "", err
	}
	if _, err := rw.Write(appendFrame(nil, opHello, 0, 0, h.encode())); err != nil {
		return "", err
	}
	f, err := readFrame(r, replyLimit)
	if err != nil {
		return "", err
	}
	if f.op == opRefused {
		return "", fmt.Errorf("%w: refused by the server", ErrAuth)
	}
	if f.op != opChallenge {
		return "", fmt.Errorf("%w: op %#x instead of a challenge", ErrProtocol, f.op)
	}
	ch, err := decodeChallenge(f.payload)
	if err != nil {
		return "", err
	}
	mine := proof(secret, roleClient, h.nonce, ch.nonce, nodeID, ch.nodeID)
	if _, err := rw.Write(appendFrame(nil, opProof, 0, 0, mine)); err != nil {
		return "", err
	}
	f, err = readFrame(r, replyLimit)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return "", fmt.Errorf("%w: the server closed the connection (%v)", ErrAuth, err)
		}
		return "", err
	}
	switch f.op {
	case opRefused:
		return "", fmt.Errorf("%w: refused by the server", ErrAuth)
	case opWelcome:
	default:
		return "", fmt.Errorf("%w: op %#x instead of a welcome", ErrProtocol, f.op)
	}
	want := proof(secret, roleServer, h.nonce, ch.nonce, nodeID, ch.nodeID)
	if !hmac.Equal(f.payload, want) {
		return "", fmt.Errorf("%w: the server %q does not hold the cluster secret", ErrAuth, ch.nodeID)
	}
	return ch.nodeID, nil
}

// serverHandshake runs the server side. It returns the client's node ID.
// On a bad proof it sends opRefused and returns ErrAuth; the client has then
// learnt only the server's nonce and node ID.
func serverHandshake(w io.Writer, r io.Reader, secret []byte, nodeID string) (string, error) {
	f, err := readFrame(r, func(op byte) int {
		if op == opHello {
			return maxHandshake
		}
		return -1
	})
	if err != nil {
		return "", err
	}
	h, err := decodeHello(f.payload)
	if err != nil {
		return "", err
	}
	if h.version != protocolVersion {
		_, _ = w.Write(appendFrame(nil, opRefused, 0, 0))
		return "", fmt.Errorf("%w: protocol version %d, want %d", ErrProtocol, h.version, protocolVersion)
	}
	ch := challenge{nodeID: nodeID}
	if _, err := rand.Read(ch.nonce[:]); err != nil {
		return "", err
	}
	if _, err := w.Write(appendFrame(nil, opChallenge, 0, 0, ch.encode())); err != nil {
		return "", err
	}
	f, err = readFrame(r, func(op byte) int {
		if op == opProof {
			return 32
		}
		return -1
	})
	if err != nil {
		return "", err
	}
	want := proof(secret, roleClient, h.nonce, ch.nonce, h.nodeID, nodeID)
	if !hmac.Equal(f.payload, want) {
		_, _ = w.Write(appendFrame(nil, opRefused, 0, 0))
		return "", fmt.Errorf("%w: client %q", ErrAuth, h.nodeID)
	}
	mine := proof(secret, roleServer, h.nonce, ch.nonce, h.nodeID, nodeID)
	if _, err := w.Write(appendFrame(nil, opWelcome, 0, 0, mine)); err != nil {
		return "", err
	}
	return h.nodeID, nil
}
