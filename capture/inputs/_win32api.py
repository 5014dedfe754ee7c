"""user32 and kernel32 as the Windows input backend's message loop calls them (prototypes)."""

from __future__ import annotations

import ctypes
import functools
from ctypes import wintypes
from typing import Any

from capture.inputs import win32_focus
from capture.inputs._rawinput import RAWINPUTDEVICE


@functools.cache
def callback_types() -> tuple[Any, Any, Any]:
    """WNDPROC, WINEVENTPROC and WNDCLASSEXW (made on first use: WINFUNCTYPE is Windows-only)."""
    w, functype = wintypes, win32_focus.function_type()
    window_proc = functype(w.LPARAM, w.HWND, w.UINT, w.WPARAM, w.LPARAM)
    win_event_proc = functype(None, w.HANDLE, w.DWORD, w.HWND, w.LONG, w.LONG, w.DWORD, w.DWORD)

    class WNDCLASSEXW(ctypes.Structure):
        _fields_ = [("cbSize", w.UINT), ("style", w.UINT), ("lpfnWndProc", window_proc),
                    ("cbClsExtra", ctypes.c_int), ("cbWndExtra", ctypes.c_int),
                    ("hInstance", w.HINSTANCE), ("hIcon", w.HICON), ("hCursor", w.HANDLE),
                    ("hbrBackground", w.HBRUSH), ("lpszMenuName", w.LPCWSTR),
                    ("lpszClassName", w.LPCWSTR), ("hIconSm", w.HICON)]

    return window_proc, win_event_proc, WNDCLASSEXW


_libraries: win32_focus.Libraries | None = None


def libraries() -> win32_focus.Libraries:
    """user32 and kernel32 with the prototypes the message loop uses; tests put fakes here."""
    global _libraries
    if _libraries is None:
        w, pointer = wintypes, ctypes.POINTER
        _, win_event_proc, window_class = callback_types()
        user32 = win32_focus.load_library("user32", {
            "RegisterClassExW": (w.ATOM, [pointer(window_class)]),
            "UnregisterClassW": (w.BOOL, [w.LPCWSTR, w.HINSTANCE]),
            "CreateWindowExW": (w.HWND, [w.DWORD, w.LPCWSTR, w.LPCWSTR, w.DWORD, ctypes.c_int,
                                         ctypes.c_int, ctypes.c_int, ctypes.c_int, w.HWND,
                                         w.HMENU, w.HINSTANCE, w.LPVOID]),
            "DestroyWindow": (w.BOOL, [w.HWND]),
            "DefWindowProcW": (w.LPARAM, [w.HWND, w.UINT, w.WPARAM, w.LPARAM]),
            "GetMessageW": (w.BOOL, [pointer(w.MSG), w.HWND, w.UINT, w.UINT]),
            "DispatchMessageW": (w.LPARAM, [pointer(w.MSG)]),
            "PostMessageW": (w.BOOL, [w.HWND, w.UINT, w.WPARAM, w.LPARAM]),
            "PostQuitMessage": (None, [ctypes.c_int]),
            "RegisterRawInputDevices": (w.BOOL, [pointer(RAWINPUTDEVICE), w.UINT, w.UINT]),
            "GetRawInputData": (w.UINT, [w.HANDLE, w.UINT, w.LPVOID, pointer(w.UINT), w.UINT]),
            "GetRawInputDeviceInfoW": (w.UINT, [w.HANDLE, w.UINT, w.LPVOID, pointer(w.UINT)]),
            "SetTimer": (ctypes.c_size_t, [w.HWND, ctypes.c_size_t, w.UINT, w.LPVOID]),
            "KillTimer": (w.BOOL, [w.HWND, ctypes.c_size_t]),
            "SetWinEventHook": (w.HANDLE, [w.DWORD, w.DWORD, w.HMODULE, win_event_proc, w.DWORD,
                                           w.DWORD, w.DWORD]),
            "UnhookWinEvent": (w.BOOL, [w.HANDLE]),
            "GetForegroundWindow": (w.HWND, []),
            "GetCursorPos": (w.BOOL, [pointer(w.POINT)]),
            "GetSystemMetrics": (ctypes.c_int, [ctypes.c_int]),
            "GetKeyboardLayout": (w.HKL, [w.DWORD]),
            "MapVirtualKeyExW": (w.UINT, [w.UINT, w.UINT, w.HKL]),
            "SetThreadDpiAwarenessContext": (w.HANDLE, [w.HANDLE]),  # Windows 10 1607+
        })
        kernel32 = win32_focus.load_library(
            "kernel32", {"GetModuleHandleW": (w.HMODULE, [w.LPCWSTR])})
        _libraries = win32_focus.Libraries(user32=user32, kernel32=kernel32)
    return _libraries


def os_error(function: str) -> OSError:
    code = ctypes.get_last_error() if hasattr(ctypes, "get_last_error") else 0
    return OSError(code, f"{function} failed (Windows error {code})")
