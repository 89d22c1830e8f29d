/* A stand-in for Windows 10's bcryptprimitives.dll!ProcessPrng, which
 * Rust's std calls for randomness and Debian's Wine 8.0 lacks. It fills the
 * buffer from RtlGenRandom (advapi32!SystemFunction036). CI only: it lets
 * the Windows build's tests run under Wine. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
