# CPACK_PRE_BUILD_SCRIPTS: runs on the staged tree before each package is
# made. Adds the Debian-style changelog for the version being packaged and
# gzips man pages (both as Debian policy wants; the .rpm gets the same files).
set(stage "${CPACK_TEMPORARY_DIRECTORY}")
file(GLOB_RECURSE docdirs LIST_DIRECTORIES true "${stage}/*/share/doc/ipsec-audit")
list(FILTER docdirs INCLUDE REGEX "/share/doc/ipsec-audit$")
if(NOT docdirs)
  message(FATAL_ERROR "pre-build: no share/doc/ipsec-audit under ${stage}")
endif()
foreach(doc IN LISTS docdirs)
  configure_file(${CPACK_IPSEC_AUDIT_PKG_DIR}/files/changelog.in ${doc}/changelog @ONLY
                 FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
  execute_process(COMMAND gzip -9nf ${doc}/changelog COMMAND_ERROR_IS_FATAL ANY)
endforeach()
file(GLOB_RECURSE pages "${stage}/*/share/man/man*/*")
foreach(page IN LISTS pages)
  if(page MATCHES "\\.[1-8]$")
    execute_process(COMMAND gzip -9nf ${page} COMMAND_ERROR_IS_FATAL ANY)
  endif()
endforeach()
